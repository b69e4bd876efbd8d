package ratelimit

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/leakytokens/leaky/internal/contract"
	"github.com/leakytokens/leaky/internal/estimate"
	"github.com/leakytokens/leaky/internal/serve"
	"github.com/leakytokens/leaky/ratelimit/ledger"
)

// Bounds of a consume.
const (
	maxConsumeTokens = 10_000
	// defaultMaxTokens is the completion assumed when a consume names no
	// token count, as authz assumes it on the gateway path.
	defaultMaxTokens = 1024
	consumePath      = "/api/v1/tokens/consume"
)

// scopeQuota names a quota's refusal (HTTP 402).

type consumeRequest struct {
	UserID   string          `json:"userId"`
	OrgID    string          `json:"orgId"`
	Provider string          `json:"provider"`
	Tokens   *int64          `json:"tokens"`
	Prompt   string          `json:"prompt"`
	Messages json.RawMessage `json:"messages"`
}

// consumeAnswer is the seed's consume answer plus resetTime and quota; a
// refusal (429) also carries the error envelope's fields, as every 4xx of
// the API does.
type consumeAnswer struct {
	Error            string          `json:"error,omitempty"`
	Message          string          `json:"message,omitempty"`
	Status           int             `json:"status,omitempty"`
	Allowed          bool            `json:"allowed"`
	Capacity         int64           `json:"capacity"`
	Used             int64           `json:"used"`
	Remaining        int64           `json:"remaining"`
	WaitSeconds      int64           `json:"waitSeconds"`
	Timestamp        time.Time       `json:"timestamp"`
	ResetTime        time.Time       `json:"resetTime"`
	Quota            *quotaFigures   `json:"quota,omitempty"`
	ProviderResponse json.RawMessage `json:"providerResponse"`
}

// quotaFigures is a quota's state after a consume.
type quotaFigures struct {
	TotalTokens     int64     `json:"totalTokens"`
	RemainingTokens int64     `json:"remainingTokens"`
	ResetTime       time.Time `json:"resetTime"`
}

// consume is POST /api/v1/tokens/consume: reserve the estimate, call the
// provider, settle at its usage. With an Idempotency-Key, a retry with the
// same body is answered the first answer again.
func (a *tokenAPI) consume(w http.ResponseWriter, r *http.Request, c Caller) {
	key, e := idempotencyKey(r)
	if e != nil {
		writeAPIError(w, e)
		return
	}
	var in consumeRequest
	body, e := readJSON(w, r, &in)
	if e != nil {
		writeAPIError(w, e)
		return
	}
	if e := a.checkConsume(c, &in); e != nil {
		writeAPIError(w, e)
		return
	}
	if key == "" {
		rp, _ := a.doConsume(r.Context(), c, in, body)
		rp.write(w)
		return
	}
	prev, conflict, finish, err := a.idem.begin(r.Context(), c.UserID+"\x00"+key, body)
	switch {
	case errors.Is(err, errIdemFull):
		errorReply(apiErr(http.StatusServiceUnavailable, "unavailable", err.Error()+", retry later"), "1").write(w)
	case err != nil:
		writeAPIError(w, apiErr(http.StatusServiceUnavailable, "unavailable", "the first request with this key is still running"))
	case conflict:
		writeAPIError(w, apiErr(http.StatusConflict, "conflict", "Idempotency key reuse with different payload"))
	case prev != nil:
		prev.write(w)
	default:
		rp, clean := a.doConsume(r.Context(), c, in, body)
		if rp.status >= 500 && clean {
			finish(nil) // nothing stands charged: a retry runs again
		} else {
			// Kept, a failure too when a charge may stand (a settle or a
			// reserve that failed): a retry with the key gets this answer
			// again and is never charged twice.
			finish(rp)
		}
		rp.write(w)
	}
}

// checkConsume validates a consume's fields and the caller's right.
func (a *tokenAPI) checkConsume(c Caller, in *consumeRequest) *apiError {
	in.Provider = strings.TrimSpace(in.Provider)
	if e := checkOwner(c, in.UserID, in.OrgID); e != nil {
		return e
	}
	switch {
	case in.Provider == "":
		return badInput("provider is required")
	case !a.providers.known(in.Provider):
		return badInput("unknown provider")
	case in.Tokens != nil && (*in.Tokens < 1 || *in.Tokens > maxConsumeTokens):
		return badInput("tokens must be between 1 and " + strconv.Itoa(maxConsumeTokens))
	}
	if m := strings.TrimSpace(string(in.Messages)); m != "" && m != "null" && !strings.HasPrefix(m, "[") {
		return badInput("messages: must be an array")
	}
	return nil
}

// doConsume reserves, calls the provider and settles. clean reports that
// no charge stands: the request was refused, or its reservation was
// settled at 0 after the provider failed; it is false when a charge stands
// or may (the answer is a success, a reserve failed — it may have run — or
// a settle failed).
func (a *tokenAPI) doConsume(ctx context.Context, c Caller, in consumeRequest, body []byte) (rp *reply, clean bool) {
	est := int64(0)
	if in.Tokens != nil {
		est = *in.Tokens
	} else {
		est, _, _ = estimate.Body(consumePath, body, defaultMaxTokens)
	}
	req := contract.Request{Provider: in.Provider, Tier: c.TierFor(in.UserID), User: in.UserID, Org: in.OrgID, Estimate: est}
	if req.Tier == "" {
		if p := a.s.limits.Load().policy; p != nil {
			req.Tier = p.DefaultTier
		}
	}
	res, err := a.s.Reserve(ctx, req, 0)
	if err != nil {
		a.log.LogAttrs(ctx, slog.LevelWarn, "token api: reserve failed", slog.String(serve.KeyError, err.Error()))
		return errorReply(apiErr(http.StatusServiceUnavailable, "unavailable", "the budget store is unavailable, retry later"), "1"), false
	}
	if !res.Allowed {
		return a.refused(req, res), true
	}
	// The provider is called on a context the client cannot cancel: a
	// consume the client abandons still completes (within the provider's
	// timeouts and bulkhead) and is settled at the provider's usage, as the
	// provider did the work; its answer is then discarded (or kept for an
	// Idempotency-Key's retry). A client hanging up is never a provider
	// failure for the circuit breaker.
	pr, callErr := a.providers.Chat(context.WithoutCancel(ctx), in.Provider, in.Prompt, in.Messages)
	actual := est
	if callErr == nil && pr.Usage > 0 {
		actual = pr.Usage
	}
	if callErr != nil {
		actual = 0 // nothing was spent: every balance back as it was
	}
	st, err := a.s.reserve.Settle(context.WithoutCancel(ctx), res.Reservation.ID, actual, ledger.KindConsume)
	clean = err == nil && actual == 0
	if err != nil {
		a.log.LogAttrs(ctx, slog.LevelError, "token api: settle failed", slog.String(serve.KeyError, err.Error()))
		st.Actual = est // the store keeps the reservation at its estimate
	}
	if callErr != nil {
		a.log.LogAttrs(ctx, slog.LevelWarn, "token api: provider call failed",
			slog.String("provider", in.Provider), slog.String(serve.KeyError, callErr.Error()))
		if errors.Is(callErr, errBulkheadFull) || errors.Is(callErr, errCircuitOpen) {
			return errorReply(apiErr(http.StatusServiceUnavailable, "unavailable", callErr.Error()+", retry later"), "1"), clean
		}
		return errorReply(apiErr(http.StatusBadGateway, "provider_failed", "provider call failed"), ""), clean
	}
	return a.allowedReply(req, res, est-st.Actual, pr.Body), false
}

// errorReply is e as a reply, with Retry-After when retry is set.
func errorReply(e *apiError, retry string) *reply {
	b, _ := json.Marshal(e)
	h := http.Header{"Content-Type": {"application/json"}, "Cache-Control": {"no-store"}}
	if retry != "" {
		h.Set("Retry-After", retry)
	}
	return &reply{status: e.Status, header: h, body: append(b, '\n')}
}

func jsonReply(status int, h http.Header, v any) *reply {
	b, _ := json.Marshal(v)
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	return &reply{status: status, header: h, body: append(b, '\n')}
}

// isQuota reports whether ch is a quota's charge.
func isQuota(ch *Charge) bool { return ch.Scope == ScopeQuota }

// reported picks the charges the answer reports: the user's bucket (or
// the first bucket) and the first quota.
func reported(charges []Charge) (bucket, quota *Charge) {
	for i := range charges {
		ch := &charges[i]
		switch {
		case isQuota(ch):
			if quota == nil {
				quota = ch
			}
		case bucket == nil || (ch.Scope == contract.ScopeUser && bucket.Scope != contract.ScopeUser):
			bucket = ch
		}
	}
	return bucket, quota
}

// allowedReply is the 200 answer; refund is what the settlement gave
// back to every item (estimate − actual; negative for a debt).
func (a *tokenAPI) allowedReply(req contract.Request, res Reserved, refund int64, provider json.RawMessage) *reply {
	now := a.now().UTC()
	out := consumeAnswer{Allowed: true, Timestamp: now, ResetTime: now, ProviderResponse: provider}
	h := http.Header{}
	bucket, quota := reported(res.Charges)
	if bucket != nil {
		remaining := min(bucket.Capacity, max(0, bucket.Result.Remaining+refund))
		out.Capacity, out.Remaining, out.Used = bucket.Capacity, remaining, bucket.Capacity-remaining
		pl, ok := a.planOf(req, bucket) // planned once for both: the reset and the headers
		out.ResetTime = now.Add(time.Duration(max(0, bucket.Result.ResetAfter-refund*interval(pl, ok))) * time.Microsecond)
		rateHeaders(h, bucket, pl, ok, remaining)
	}
	if quota != nil {
		out.Quota = &quotaFigures{TotalTokens: quota.Capacity, RemainingTokens: quota.Result.Remaining + refund,
			ResetTime: quota.Reset}
	}
	return jsonReply(http.StatusOK, h, out)
}

// refused answers a refusal: 402 when a quota refused, else 429 with the
// bucket figures and the gateway path's RateLimit headers.
func (a *tokenAPI) refused(req contract.Request, res Reserved) *reply {
	plans, results := a.plansOf(req, res.Charges)
	for i := range res.Charges {
		if isQuota(&res.Charges[i]) && !res.Charges[i].Result.Allowed {
			return errorReply(apiErr(http.StatusPaymentRequired, "quota_exhausted", "insufficient token quota"), "")
		}
	}
	now := a.now().UTC()
	out := consumeAnswer{
		Error: "rate_limited", Message: "the token budget is spent: retry after waitSeconds", Status: http.StatusTooManyRequests,
		Timestamp: now, ResetTime: now, ProviderResponse: json.RawMessage("{}"),
	}
	h := http.Header{}
	var worst *Charge
	for i := range res.Charges {
		ch := &res.Charges[i]
		if !ch.Result.Allowed && (worst == nil || ch.Result.RetryAfter < 0 || ch.Result.RetryAfter > worst.Result.RetryAfter) {
			worst = ch
		}
	}
	if worst != nil {
		out.Capacity, out.Remaining = worst.Capacity, worst.Result.Remaining
		out.Used = worst.Capacity - max(0, worst.Result.Remaining)
		out.WaitSeconds = ceilDiv(worst.Result.RetryAfter, 1e6)
		out.ResetTime = now.Add(time.Duration(worst.Result.ResetAfter) * time.Microsecond)
		setXRateLimit(h, worst.Capacity, worst.Result.Remaining, out.WaitSeconds)
	}
	gw := overLimitHeaders(plans, results)
	for k, v := range gw {
		h[k] = v
	}
	if worst != nil && worst.Result.RetryAfter < 0 {
		out.WaitSeconds = -1
	}
	return jsonReply(http.StatusTooManyRequests, h, out)
}

// setXRateLimit sets the seed's X-RateLimit-* headers.
func setXRateLimit(h http.Header, limit, remaining, waitSeconds int64) {
	h.Set("X-RateLimit-Limit", strconv.FormatInt(limit, 10))
	h.Set("X-RateLimit-Remaining", strconv.FormatInt(max(0, remaining), 10))
	h.Set("X-RateLimit-Used", strconv.FormatInt(limit-max(0, remaining), 10))
	h.Set("X-RateLimit-Reset", strconv.FormatInt(max(0, waitSeconds), 10))
}
