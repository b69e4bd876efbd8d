package standin

import (
	"context"
	"net/http"
	"strconv"
	"strings"

	ratelimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// rateLimit is the ratelimit filter: true lets the request go on; false
// means a reply went out.
func (p *pipeline) rateLimit(ex *exchange) bool {
	f := p.cfg.listener.limit
	if f == nil || ex.route == nil {
		return true
	}
	descs := p.descriptors(ex.route.limits[f.name], ex.header)
	if len(descs) == 0 {
		return true
	}
	// Like Envoy, every overall code but OVER_LIMIT (UNKNOWN included) is OK.
	resp, err := p.shouldRateLimit(ex, f, &rlsv3.RateLimitRequest{Domain: f.domain, Descriptors: descs})
	if err != nil {
		p.g.metrics.ratelimit.WithLabelValues("error").Inc()
		p.g.throttledWarn("ratelimit call failed", "cluster", f.cluster, "error", err)
		if f.failureModeDeny {
			p.reply(ex, localReply{status: f.statusOnError, details: "rate_limiter_error", flag: flagRateLimitError})
			return false
		}
		return true
	}
	if f.xHeaders {
		ex.respOps = append(ex.respOps, xRateLimitHeaders(resp.GetStatuses())...)
	}
	if resp.GetOverallCode() == rlsv3.RateLimitResponse_OVER_LIMIT {
		p.g.metrics.ratelimit.WithLabelValues("over_limit").Inc()
		h := http.Header{}
		for _, hv := range resp.GetResponseHeadersToAdd() {
			h.Add(hv.GetKey(), hv.GetValue())
		}
		h.Set("X-Envoy-Ratelimited", "true")
		p.reply(ex, localReply{status: http.StatusTooManyRequests, header: h, body: string(resp.GetRawBody()),
			details: "request_rate_limited", flag: flagRateLimited})
		return false
	}
	p.g.metrics.ratelimit.WithLabelValues("ok").Inc()
	for _, hv := range resp.GetRequestHeadersToAdd() {
		ex.header.Add(hv.GetKey(), hv.GetValue())
	}
	for _, hv := range resp.GetResponseHeadersToAdd() {
		ex.respOps = append(ex.respOps, headerOp{key: hv.GetKey(), value: hv.GetValue(), action: addValue})
	}
	return true
}

func (p *pipeline) shouldRateLimit(ex *exchange, f *rateLimitFilter, req *rlsv3.RateLimitRequest) (*rlsv3.RateLimitResponse, error) {
	return callFilter(p, ex, f.cluster, f.timeout, func(ctx context.Context, conn *grpc.ClientConn) (*rlsv3.RateLimitResponse, error) {
		return rlsv3.NewRateLimitServiceClient(conn).ShouldRateLimit(ctx, req)
	})
}

// descriptors are what the route's rate limits make of the request headers,
// as Envoy's request_headers actions do: a missing header drops that
// descriptor (unless the action says skip_if_absent, which drops the entry
// alone), and the hits_addend comes from its number or its %REQ(h)% format;
// a format whose value is not a number up to 10^9 drops the descriptor.
// Values are made valid UTF-8 as in the CheckRequest.
func (p *pipeline) descriptors(rules []rateLimitRule, h http.Header) []*ratelimitv3.RateLimitDescriptor {
	var out []*ratelimitv3.RateLimitDescriptor
rules:
	for _, rule := range rules {
		d := &ratelimitv3.RateLimitDescriptor{}
		for _, a := range rule.actions {
			vs := h.Values(a.header)
			if len(vs) == 0 {
				if a.skipIfAbsent {
					continue
				}
				continue rules
			}
			d.Entries = append(d.Entries, &ratelimitv3.RateLimitDescriptor_Entry{Key: a.key, Value: validUTF8(vs[0])})
		}
		if len(d.Entries) == 0 {
			continue
		}
		switch {
		case rule.hits.set && rule.hits.header == "":
			d.HitsAddend = wrapperspb.UInt64(rule.hits.number)
		case rule.hits.set:
			raw := h.Get(rule.hits.header)
			n, err := strconv.ParseUint(strings.TrimSpace(raw), 10, 64)
			if err != nil || n > maxHitsAddend {
				p.g.throttledWarn("hits_addend is not a number up to 10^9; descriptor dropped", "header", rule.hits.header, "value", raw)
				continue rules
			}
			d.HitsAddend = wrapperspb.UInt64(n)
		}
		out = append(out, d)
	}
	return out
}

// xRateLimitHeaders are DRAFT_VERSION_03's X-RateLimit-Limit, -Remaining
// and -Reset, from the status with the least remaining, as Envoy writes
// them: "limit, limit;w=window[;name="…"]" for every status with a limit.
func xRateLimitHeaders(statuses []*rlsv3.RateLimitResponse_DescriptorStatus) []headerOp {
	var least *rlsv3.RateLimitResponse_DescriptorStatus
	for _, s := range statuses {
		if s.GetCurrentLimit() == nil {
			continue
		}
		if least == nil || s.GetLimitRemaining() < least.GetLimitRemaining() {
			least = s
		}
	}
	if least == nil {
		return nil
	}
	var b strings.Builder
	b.WriteString(strconv.FormatUint(uint64(least.GetCurrentLimit().GetRequestsPerUnit()), 10))
	for _, s := range statuses {
		w := unitSeconds(s.GetCurrentLimit().GetUnit())
		if s.GetCurrentLimit() == nil || w == 0 {
			continue
		}
		b.WriteString(", " + strconv.FormatUint(uint64(s.GetCurrentLimit().GetRequestsPerUnit()), 10) + ";w=" + strconv.Itoa(w))
		if name := s.GetCurrentLimit().GetName(); name != "" {
			b.WriteString(`;name="` + name + `"`)
		}
	}
	return []headerOp{
		{key: "X-Ratelimit-Limit", value: b.String(), action: addValue},
		{key: "X-Ratelimit-Remaining", value: strconv.FormatUint(uint64(least.GetLimitRemaining()), 10), action: addValue},
		{key: "X-Ratelimit-Reset", value: strconv.FormatInt(least.GetDurationUntilReset().GetSeconds(), 10), action: addValue},
	}
}

func unitSeconds(u rlsv3.RateLimitResponse_RateLimit_Unit) int {
	switch u {
	case rlsv3.RateLimitResponse_RateLimit_SECOND:
		return 1
	case rlsv3.RateLimitResponse_RateLimit_MINUTE:
		return 60
	case rlsv3.RateLimitResponse_RateLimit_HOUR:
		return 3600
	case rlsv3.RateLimitResponse_RateLimit_DAY:
		return 86400
	case rlsv3.RateLimitResponse_RateLimit_WEEK:
		return 7 * 86400
	case rlsv3.RateLimitResponse_RateLimit_MONTH:
		return 30 * 86400
	case rlsv3.RateLimitResponse_RateLimit_YEAR:
		return 365 * 86400
	}
	return 0
}
