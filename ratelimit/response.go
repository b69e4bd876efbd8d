package ratelimit

import (
	"encoding/json"
	"math"
	"strconv"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/leakytokens/leaky/ratelimit/store"
)

// overLimitBody is the JSON body of an OVER_LIMIT answer (DESIGN §3).
// RetryAfterSeconds is -1 when the request can never be admitted because it
// asks for more than the bucket holds.
type overLimitBody struct {
	Error             string `json:"error"`
	Scope             string `json:"scope"`
	Limit             int64  `json:"limit"`
	Remaining         int64  `json:"remaining"`
	RetryAfterSeconds int64  `json:"retry_after_seconds"`
	Message           string `json:"message,omitempty"`
}

// descriptorStatus builds a descriptor's status from its plan and result.
// The store reports each bucket as the whole decision left it: charged when
// the request was admitted, untouched when it was refused.
func descriptorStatus(p *plan, r *store.Result, admitted bool) *rlsv3.RateLimitResponse_DescriptorStatus {
	st := &rlsv3.RateLimitResponse_DescriptorStatus{Code: rlsv3.RateLimitResponse_OK}
	if p.zero {
		st.Code, st.CurrentLimit = rlsv3.RateLimitResponse_OVER_LIMIT, p.status
	}
	if !p.hasItem {
		if p.unlimited {
			st.LimitRemaining = math.MaxUint32 // and no current_limit
		}
		return st
	}
	st.CurrentLimit = p.status
	st.LimitRemaining = clampUint32(r.Remaining)
	st.DurationUntilReset = durationpb.New(microseconds(r.ResetAfter))
	if !r.Allowed && (!p.item.Shadow || (p.quota && !admitted)) {
		st.Code = rlsv3.RateLimitResponse_OVER_LIMIT
	}
	return st
}

// quotaStatus reports a descriptor's quota in its status when the quota
// refused (the descriptor is then OVER_LIMIT) or when the descriptor has
// no bucket.
func quotaStatus(st *rlsv3.RateLimitResponse_DescriptorStatus, p *plan, r *store.Result) {
	q := p.allowance
	if q == nil || (r.Allowed && p.hasItem) {
		return
	}
	st.CurrentLimit = &rlsv3.RateLimitResponse_RateLimit{
		Name:            string(ScopeQuota),
		RequestsPerUnit: clampUint32(q.allowance),
		Unit:            unitFor(q.window),
	}
	st.LimitRemaining = clampUint32(r.Remaining)
	st.DurationUntilReset = durationpb.New(microseconds(r.ResetAfter))
	if !r.Allowed && !q.item.Shadow {
		st.Code = rlsv3.RateLimitResponse_OVER_LIMIT
	}
}

// overLimitAnswer adds the RateLimit-Policy, RateLimit and Retry-After
// headers and the JSON body: from the refusing quota whose window ends
// last when a quota refused (quotas may be nil), else from the refusing
// bucket that frees last.
func overLimitAnswer(resp *rlsv3.RateLimitResponse, plans []plan, results, quotas []store.Result) {
	if quotaAnswer(resp, plans, quotas) {
		return
	}
	worst := -1
	for i := range plans {
		if plans[i].zero {
			// A limit of zero never admits: it explains the refusal.
			worst = i
			break
		}
		r := &results[i]
		if !plans[i].hasItem || r.Allowed || (plans[i].item.Shadow && !plans[i].quota) {
			continue
		}
		if worst < 0 || r.RetryAfter < 0 || (results[worst].RetryAfter >= 0 && r.RetryAfter > results[worst].RetryAfter) {
			worst = i
		}
	}
	if worst < 0 {
		return
	}
	p, r := &plans[worst], results[worst]
	if p.zero {
		r = store.Result{RetryAfter: -1}
	}
	writeOverLimit(resp, overLimitBody{Error: "rate_limited", Scope: p.scope, Limit: p.item.Limit, Remaining: r.Remaining}, r.RetryAfter, p.window)
}

// quotaAnswer writes the answer of a refusal by a quota, if one refused.
func quotaAnswer(resp *rlsv3.RateLimitResponse, plans []plan, quotas []store.Result) bool {
	worst := -1
	for i := range quotas {
		q, r := plans[i].allowance, &quotas[i]
		if q == nil || r.Allowed || q.item.Shadow {
			continue
		}
		if worst < 0 || r.RetryAfter < 0 || (quotas[worst].RetryAfter >= 0 && r.RetryAfter > quotas[worst].RetryAfter) {
			worst = i
		}
	}
	if worst < 0 {
		return false
	}
	q, r := plans[worst].allowance, quotas[worst]
	body := overLimitBody{Error: "quota_exhausted", Scope: string(ScopeQuota), Limit: q.allowance, Remaining: max(r.Remaining, 0)}
	writeOverLimit(resp, body, r.RetryAfter, q.window)
	return true
}

// writeOverLimit sets the headers and the body of an OVER_LIMIT answer:
// retryAfter is µs (-1 never), window the limit's span in seconds.
func writeOverLimit(resp *rlsv3.RateLimitResponse, body overLimitBody, retryAfter, window int64) {
	retry := int64(-1)
	if retryAfter >= 0 {
		retry = ceilDiv(retryAfter, 1e6)
		if retry == 0 {
			retry = 1
		}
	} else {
		body.Message = "the request asks for more than the limit allows"
	}
	body.RetryAfterSeconds = retry
	name := strconv.Quote(body.Scope)
	state := name + ";r=" + strconv.FormatInt(max(body.Remaining, 0), 10)
	if retry >= 0 { // no t= (and no Retry-After) when waiting cannot help
		state += ";t=" + strconv.FormatInt(retry, 10)
	}
	headers := []*corev3.HeaderValue{
		{Key: "content-type", Value: "application/json"},
		{Key: "ratelimit-policy", Value: name + ";q=" + strconv.FormatInt(body.Limit, 10) + ";w=" + strconv.FormatInt(max(window, 1), 10)},
		{Key: "ratelimit", Value: state},
	}
	if retry >= 0 {
		headers = append(headers, &corev3.HeaderValue{Key: "retry-after", Value: strconv.FormatInt(retry, 10)})
	}
	resp.ResponseHeadersToAdd = headers
	resp.RawBody, _ = json.Marshal(body)
}
