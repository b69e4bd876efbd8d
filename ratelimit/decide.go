package ratelimit

import (
	"context"
	"errors"
	"time"
	"unicode/utf8"

	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/leakytokens/leaky/internal/policy"
	"github.com/leakytokens/leaky/internal/serve"
	"github.com/leakytokens/leaky/ratelimit/store"
)

// Bounds on one request; beyond them the answer is INVALID_ARGUMENT. Values
// of any length up to the gRPC message bound are accepted (long ones are
// hashed into store keys).
const (
	maxEntries   = 16  // entries per descriptor
	maxKeyLength = 256 // bytes per entry key
)

var _ rlsv3.RateLimitServiceServer = (*Service)(nil)

// ShouldRateLimit decides a request all or nothing: when any bucket refuses,
// none is charged. See README "Request semantics" for every input's answer.
func (s *Service) ShouldRateLimit(ctx context.Context, req *rlsv3.RateLimitRequest) (*rlsv3.RateLimitResponse, error) {
	start := time.Now()
	defer func() { s.metrics.decisionTime.Observe(time.Since(start).Seconds()) }()
	if reason, msg := s.invalid(req); reason != "" {
		s.metrics.invalid.WithLabelValues(reason).Inc()
		return nil, status.Error(codes.InvalidArgument, msg)
	}
	l := s.limits.Load()
	domain := req.GetDomain()
	plans := s.plan(l, req)
	if s.failsClosed(l, domain) {
		ctx = store.WithFailClosed(ctx)
	}

	items, quotas := planItems(plans)
	zero := false
	for i := range plans {
		zero = zero || plans[i].zero
	}
	resp := &rlsv3.RateLimitResponse{
		OverallCode: rlsv3.RateLimitResponse_OK,
		Statuses:    make([]*rlsv3.RateLimitResponse_DescriptorStatus, len(plans)),
	}
	if len(items) == 0 || zero {
		// Nothing to count, or a limit of zero refuses the request before
		// any bucket is charged. Buckets are reported as they are.
		results := make([]store.Result, len(plans))
		if zero && len(items) > 0 {
			if err := s.peek(ctx, plans, results); err != nil {
				return s.failure(l, domain, plans, err)
			}
		}
		for i := range plans {
			resp.Statuses[i] = descriptorStatus(&plans[i], &results[i], !zero)
			s.count(domain, &plans[i], &results[i], !zero)
		}
		if zero {
			resp.OverallCode = rlsv3.RateLimitResponse_OVER_LIMIT
			overLimitAnswer(resp, plans, results, nil)
		}
		return s.withDynamicMetadata(req, plans, resp), nil
	}
	dec, err := s.decideSeeded(ctx, items, quotas, func() (store.Decision, error) { return s.decideMetered(ctx, req, items, quotas) })
	if status.Code(err) == codes.InvalidArgument {
		return nil, err // a request id already reserved
	}
	if err != nil {
		return s.failure(l, domain, plans, err)
	}
	results, qresults := splitResults(plans, dec.Results)
	admitted := dec.Allowed && !quotasExhausted(plans, results)
	for i := range plans {
		resp.Statuses[i] = descriptorStatus(&plans[i], &results[i], admitted)
		quotaStatus(resp.Statuses[i], &plans[i], &qresults[i])
		s.count(domain, &plans[i], &results[i], admitted)
	}
	if !admitted {
		resp.OverallCode = rlsv3.RateLimitResponse_OVER_LIMIT
		overLimitAnswer(resp, plans, results, qresults)
	}
	return s.withDynamicMetadata(req, plans, resp), nil
}

// planItems lists the store items of plans in order (each descriptor's
// bucket, then its quota) and, beside them, each item's quota plan (nil
// for a bucket).
func planItems(plans []plan) ([]store.Item, []*quotaPlan) {
	items := make([]store.Item, 0, len(plans)+2)
	var quotas []*quotaPlan
	for i := range plans {
		if plans[i].hasItem {
			items = append(items, plans[i].item)
			if quotas != nil {
				quotas = append(quotas, nil)
			}
		}
		if q := plans[i].allowance; q != nil {
			if quotas == nil {
				quotas = make([]*quotaPlan, len(items), len(plans)+2)
			}
			items, quotas = append(items, q.item), append(quotas, q)
		}
	}
	if quotas == nil {
		quotas = make([]*quotaPlan, len(items))
	}
	return items, quotas
}

// splitResults maps a decision's results (in planItems' order) back to
// the plans: each descriptor's bucket result and quota result.
func splitResults(plans []plan, res []store.Result) (buckets, quotas []store.Result) {
	buckets = make([]store.Result, len(plans))
	quotas = make([]store.Result, len(plans))
	for i, j := 0, 0; i < len(plans); i++ {
		if plans[i].hasItem {
			buckets[i] = res[j]
			j++
		}
		if plans[i].allowance != nil {
			quotas[i] = res[j]
			j++
		}
	}
	return buckets, quotas
}

// peek reads the buckets of plans without charging them (hits 0), for the
// statuses of a request refused before any bucket was asked.
func (s *Service) peek(ctx context.Context, plans []plan, results []store.Result) error {
	items := make([]store.Item, 0, len(plans))
	for i := range plans {
		if plans[i].hasItem {
			it := plans[i].item
			it.Hits = 0
			items = append(items, it)
		}
	}
	dec, err := s.store.Decide(ctx, items)
	if err != nil {
		return err
	}
	for i, j := 0, 0; i < len(plans); i++ {
		if plans[i].hasItem {
			results[i] = dec.Results[j]
			results[i].Allowed = true
			j++
		}
	}
	return nil
}

// invalid returns a metric reason and a message for a request that breaks
// the documented bounds, or "" for a valid one.
func (s *Service) invalid(req *rlsv3.RateLimitRequest) (reason, msg string) {
	switch {
	case req.GetDomain() == "":
		return "empty_domain", "domain must not be empty"
	case len(req.GetDescriptors()) == 0:
		return "no_descriptors", "descriptor list must not be empty"
	case len(req.GetDescriptors()) > s.cfg.MaxDescriptors:
		return "too_many_descriptors", "too many descriptors"
	}
	for _, d := range req.GetDescriptors() {
		if len(d.GetEntries()) == 0 {
			return "empty_descriptor", "descriptor must have at least one entry"
		}
		if len(d.GetEntries()) > maxEntries {
			return "too_many_entries", "too many entries in a descriptor"
		}
		for _, e := range d.GetEntries() {
			if e.GetKey() == "" {
				return "empty_key", "descriptor entry key must not be empty"
			}
			if len(e.GetKey()) > maxKeyLength || !utf8.ValidString(e.GetKey()) || keyEscaped(e) {
				return "bad_key", "descriptor entry key must be valid UTF-8 of at most 256 bytes"
			}
		}
	}
	return "", ""
}

// plan maps every descriptor to its bucket under configuration l.
func (s *Service) plan(l *limits, req *rlsv3.RateLimitRequest) []plan {
	plans := make([]plan, len(req.GetDescriptors()))
	domain := req.GetDomain()
	switch {
	case domain == policy.Domain && l.policy != nil:
		now := s.clock()
		for i, d := range req.GetDescriptors() {
			if _, ok := requestIDOf(d); ok {
				continue // no bucket: OK, no current_limit, nothing charged
			}
			plans[i] = planLeaky(l.policy, req, d, now)
		}
	case l.rules != nil && l.rules.Domain(domain) != nil:
		planRules(l.rules.Domain(domain), req, plans)
	default:
		for i := range plans {
			plans[i].noRule = true
		}
	}
	for i := range plans {
		if plans[i].noRule {
			s.metrics.noRule.WithLabelValues(s.domainLabel(l, domain)).Inc()
		}
	}
	return plans
}

// domainLabel bounds the domain label to configured domains.
func (s *Service) domainLabel(l *limits, domain string) string {
	if (domain == policy.Domain && l.policy != nil) || (l.rules != nil && l.rules.Domain(domain) != nil) {
		return domain
	}
	return "unknown"
}

func (s *Service) count(domain string, p *plan, r *store.Result, admitted bool) {
	if p.zero {
		s.metrics.rule(domain, p.metric).overLimit.Inc()
		return
	}
	if !p.hasItem {
		return
	}
	c := s.metrics.rule(domain, p.metric)
	h := float64(p.item.Hits)
	c.totalHits.Add(h)
	switch {
	case !r.Allowed && p.item.Shadow:
		c.shadowMode.Add(h)
	case !r.Allowed || !admitted:
		c.overLimit.Add(h)
	default:
		c.withinLimit.Add(h)
		if r.Remaining*5 < p.item.Limit {
			c.nearLimit.Add(h)
		}
	}
}

// failure answers a request whose store call failed, by the domain's
// failure mode: the policy's for leaky-tokens, an error for other domains
// (as envoyproxy/ratelimit does; Envoy's failure_mode_deny then decides).
func (s *Service) failure(l *limits, domain string, plans []plan, err error) (*rlsv3.RateLimitResponse, error) {
	if errors.Is(err, store.ErrInvalidItem) {
		// A bug in planning, not a backend fault: no failure mode applies.
		s.metrics.invalid.WithLabelValues("undecidable").Inc()
		return nil, status.Error(codes.InvalidArgument, "descriptor cannot be decided")
	}
	kind := s.errorKind(err)
	if errors.Is(err, store.ErrLate) {
		kind = "late" // executed (or due) past its deadline: nothing charged
	}
	s.metrics.backendErrs.WithLabelValues(kind).Inc()
	s.health.storeFailed()
	// At most one line a second: an outage fails every call.
	if ok, skipped := s.storeLog.Allow(time.Now()); ok {
		s.log.Warn("store failed; answering by the failure mode", serve.KeyKind, kind, serve.KeyError, err.Error(), serve.KeySkipped, skipped)
	}
	mode := policy.FailError
	if domain == policy.Domain && l.policy != nil {
		mode = l.policy.FailureMode
	}
	s.metrics.failureMode.WithLabelValues(string(mode)).Inc()
	code := rlsv3.RateLimitResponse_OK
	switch mode {
	case policy.FailError:
		return nil, status.Error(codes.Unavailable, "rate-limit store unavailable")
	case policy.FailDeny:
		code = rlsv3.RateLimitResponse_OVER_LIMIT
	}
	resp := &rlsv3.RateLimitResponse{OverallCode: code, Statuses: make([]*rlsv3.RateLimitResponse_DescriptorStatus, len(plans))}
	for i := range plans {
		resp.Statuses[i] = &rlsv3.RateLimitResponse_DescriptorStatus{Code: code, CurrentLimit: plans[i].status}
	}
	return resp, nil
}

// quotasExhausted reports whether the request has quota-mode descriptors and
// every one of them is over its limit: together they refuse the request
// (envoyproxy/ratelimit's quota_mode). The store decided them as shadow
// items, so like envoyproxy/ratelimit the other counters were charged.
func quotasExhausted(plans []plan, results []store.Result) bool {
	quotas, over := 0, 0
	for i := range plans {
		if plans[i].quota && plans[i].hasItem {
			quotas++
			if !results[i].Allowed {
				over++
			}
		}
	}
	return quotas > 0 && quotas == over
}

func microseconds(us int64) time.Duration { return time.Duration(us) * time.Microsecond }

// failsClosed reports whether Envoy refuses a request of domain when its
// decision fails: the policy's failure mode deny for leaky-tokens, or
// error with the gateway's ratelimit_failure_mode deny (Envoy's
// failure_mode_deny); for other domains, which answer errors,
// -envoy-failure-mode-deny. Such a decision runs on a fail-closed context
// (store.WithFailClosed): one the store executes past its deadline (the
// caller's; on Redis also -redis-timeout, after which the service answers
// by the failure mode) charges nothing. The memory store has no timeout of
// its own: it answers whatever its decision took, so only the caller's
// deadline bounds it. See README "Deadlines and phantom charges".
func (s *Service) failsClosed(l *limits, domain string) bool {
	if domain == policy.Domain && l.policy != nil {
		switch l.policy.FailureMode {
		case policy.FailDeny:
			return true
		case policy.FailError:
			return l.policy.Gateway.RatelimitFailureMode == policy.FailDeny
		}
		return false
	}
	return s.cfg.EnvoyFailureModeDeny
}
