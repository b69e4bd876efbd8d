package ratelimit

import (
	"net/http"
	"strconv"

	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"

	"github.com/leakytokens/leaky/internal/contract"
	"github.com/leakytokens/leaky/ratelimit/store"
)

// plansOf returns the plans of req under the current policy matched to
// the charges of its reservation by bucket key, with the charges'
// results: what the gateway path's answer is computed from.
func (a *tokenAPI) plansOf(req contract.Request, charges []Charge) ([]plan, []store.Result) {
	p := a.s.limits.Load().policy
	if p == nil {
		return nil, nil
	}
	var plans []plan
	var results []store.Result
	for _, pl := range planRequest(p, req, a.s.clock()) {
		for _, ch := range charges {
			if ch.Key == pl.item.Key && pl.hasItem {
				plans, results = append(plans, pl), append(results, ch.Result)
				break
			}
		}
	}
	return plans, results
}

// planOf is the plan of one charge (ok false when the policy changed
// since).
func (a *tokenAPI) planOf(req contract.Request, ch *Charge) (plan, bool) {
	plans, _ := a.plansOf(req, []Charge{*ch})
	if len(plans) == 0 {
		return plan{}, false
	}
	return plans[0], true
}

// interval is µs per token of a charge's bucket planned as pl (0 when it
// is not a GCRA bucket, or !ok: the policy changed since).
func interval(pl plan, ok bool) int64 {
	if ok && pl.item.Algorithm == store.GCRA {
		return pl.item.Period
	}
	return 0
}

// rateHeaders sets an admitted consume's headers for bucket ch, planned as
// pl (!ok: the policy changed since, only the seed's headers): the seed's
// X-RateLimit-* and the RateLimit-Policy and RateLimit fields the gateway
// path answers with, for the same bucket.
func rateHeaders(h http.Header, ch *Charge, pl plan, ok bool, remaining int64) {
	setXRateLimit(h, ch.Capacity, remaining, 0)
	if !ok {
		return
	}
	name := strconv.Quote(pl.scope)
	h.Set("RateLimit-Policy", name+";q="+strconv.FormatInt(pl.item.Limit, 10)+";w="+strconv.FormatInt(max(pl.window, 1), 10))
	h.Set("RateLimit", name+";r="+strconv.FormatInt(remaining, 10))
}

// overLimitHeaders are the headers the gateway path answers a refusal
// with (overLimitAnswer): RateLimit-Policy, RateLimit, Retry-After.
func overLimitHeaders(plans []plan, results []store.Result) http.Header {
	var resp rlsv3.RateLimitResponse
	overLimitAnswer(&resp, plans, results, nil)
	h := http.Header{}
	for _, hv := range resp.GetResponseHeadersToAdd() {
		if hv.GetKey() != "content-type" {
			h.Set(hv.GetKey(), hv.GetValue())
		}
	}
	return h
}
