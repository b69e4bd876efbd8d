package ratelimit

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/leakytokens/leaky/internal/contract"
	"github.com/leakytokens/leaky/internal/policy"
	"github.com/leakytokens/leaky/internal/serve"
	"github.com/leakytokens/leaky/ratelimit/ledger"
	"github.com/leakytokens/leaky/ratelimit/store"
)

// quotaReply is GET /quota's and /quota/org's answer.
type quotaReply struct {
	UserID          string    `json:"userId,omitempty"`
	OrgID           string    `json:"orgId,omitempty"`
	Provider        string    `json:"provider"`
	TotalTokens     int64     `json:"totalTokens"`
	RemainingTokens int64     `json:"remainingTokens"`
	UpdatedAt       time.Time `json:"updatedAt"`
	ResetTime       time.Time `json:"resetTime"`
}

// userQuota is GET /api/v1/tokens/quota?userId&provider.
func (a *tokenAPI) userQuota(w http.ResponseWriter, r *http.Request, c Caller) {
	q := r.URL.Query()
	userID, provider := q.Get("userId"), strings.TrimSpace(q.Get("provider"))
	if e := checkOwner(c, userID, ""); e != nil {
		writeAPIError(w, e)
		return
	}
	tier := c.TierFor(userID)
	pool := ledger.Pool{Scope: string(contract.ScopeUser), Subject: userID, Provider: provider}
	a.quota(w, r, quotaReply{UserID: userID, Provider: provider}, pool, tier, provider)
}

// orgQuota is GET /api/v1/tokens/quota/org?orgId&provider.
func (a *tokenAPI) orgQuota(w http.ResponseWriter, r *http.Request, c Caller) {
	q := r.URL.Query()
	orgID, provider := q.Get("orgId"), strings.TrimSpace(q.Get("provider"))
	var e *apiError
	switch {
	case orgID == "":
		e = badInput("orgId is required")
	case !contract.ValidOrgID(orgID):
		e = badInput("invalid orgId")
	case !c.MayOrg(orgID):
		e = apiErr(http.StatusForbidden, "forbidden", "you are not a member of that organisation")
	}
	if e != nil {
		writeAPIError(w, e)
		return
	}
	pool := ledger.Pool{Scope: string(contract.ScopeOrg), Subject: orgID, Provider: provider}
	a.quota(w, r, quotaReply{OrgID: orgID, Provider: provider}, pool, "", provider)
}

func (a *tokenAPI) quota(w http.ResponseWriter, r *http.Request, out quotaReply, pool ledger.Pool, tier, provider string) {
	switch {
	case provider == "":
		writeAPIError(w, badInput("provider is required"))
		return
	case !a.providers.known(provider):
		writeAPIError(w, badInput("unknown provider"))
		return
	}
	q := a.quotaPlanOf(pool, tier)
	if q == nil {
		writeAPIError(w, apiErr(http.StatusNotFound, "not_found", "quota not found"))
		return
	}
	it := q.item
	remaining, err := a.peek(r.Context(), pool, it, q.start)
	if err != nil {
		a.log.LogAttrs(r.Context(), slog.LevelWarn, "token api: read quota", slog.String(serve.KeyError, err.Error()))
		w.Header().Set("Retry-After", "1")
		writeAPIError(w, apiErr(http.StatusServiceUnavailable, "unavailable", "the budget store is unavailable, retry later"))
		return
	}
	now := a.now().UTC()
	out.TotalTokens, out.RemainingTokens, out.UpdatedAt = it.Limit, remaining, now
	out.ResetTime = q.end
	serve.WriteJSON(w, http.StatusOK, out)
}

// peek decides it with no hits: the pool's remaining tokens and µs to the
// window's end, charging nothing. A pool the store has no state for is
// read from the ledger (nothing used when there is none).
func (a *tokenAPI) peek(ctx context.Context, pool ledger.Pool, it store.Item, window time.Time) (remaining int64, err error) {
	it.Hits = 0
	dec, err := a.s.store.Decide(ctx, []store.Item{it})
	if err == nil && len(dec.Results) == 1 {
		return dec.Results[0].Remaining, nil
	}
	if !errors.Is(err, store.ErrUnseeded) {
		return 0, err
	}
	var st ledger.QuotaState
	if l := a.s.record; l != nil {
		if st, err = l.QuotaState(ctx, pool, window); err != nil {
			return 0, err
		}
	}
	return it.Limit - st.Used + st.Purchased, nil
}

// quotaPlanOf is the quota the policy plans for pool (the buyer's tier
// for a user pool) now; nil when no quota applies.
func (a *tokenAPI) quotaPlanOf(pool ledger.Pool, tier string) *quotaPlan {
	p := a.s.limits.Load().policy
	if p == nil {
		return nil
	}
	req := contract.Request{Provider: pool.Provider, Org: pool.Subject}
	if pool.Scope == string(contract.ScopeUser) {
		if tier == "" {
			tier = p.DefaultTier
		}
		req = contract.Request{Provider: pool.Provider, Tier: tier, User: pool.Subject}
	}
	balance := contract.PurchasedKey(contract.Scope(pool.Scope), pool.Subject, pool.Provider)
	for _, pl := range planRequest(p, req, a.s.clock()) {
		if q := pl.allowance; q != nil && q.item.Purchased == balance {
			return q
		}
	}
	return nil
}

// windowCredit is the counter item of the window a window-only saga
// recorded: its key is the pool's counter key for Saga.Window. Its Period
// (the counter's TTL, less the grace, should the credit create it) is the
// time left in the longest of the pool's quotas whose current window
// starts at Saga.Window: for a user pool any tier's, since the buyer's
// tier is not recorded (recovery has none). The longest, not the
// shortest: windows starting together share the counter key, so a
// shorter TTL would drop a longer window's counter (and its usage) while
// that window runs, where a longer one only keeps a shorter window's
// counter past its end (it is never read after it: the next window has
// another key). ok is false when no quota's current window starts there:
// the window is over.
func (a *tokenAPI) windowCredit(s ledger.Saga) (store.Item, bool) {
	p := a.s.limits.Load().policy
	if p == nil || p.Quotas == nil {
		return store.Item{}, false
	}
	var qs []policy.Quota
	if s.Pool.Scope == string(contract.ScopeUser) {
		for tier := range p.Quotas.Tiers {
			if q, ok := p.UserQuota(tier, s.Pool.Provider); ok {
				qs = append(qs, q)
			}
		}
	} else if q, ok := p.OrgQuota(s.Pool.Provider); ok {
		qs = append(qs, q)
	}
	now := a.s.clock()
	var best *policy.Quota
	var period int64
	for i, q := range qs {
		start, end := q.Window(now)
		if d := end.Sub(now).Microseconds(); start.Equal(s.Window) && d > period {
			best, period = &qs[i], d
		}
	}
	if best == nil {
		return store.Item{}, false
	}
	scope := contract.Scope(s.Pool.Scope)
	return store.Item{
		Key:       contract.QuotaKey(scope, s.Pool.Subject, s.Pool.Provider, s.Window.Unix()),
		Algorithm: store.Quota,
		Limit:     best.Allowance,
		Period:    period,
		Purchased: contract.PurchasedKey(scope, s.Pool.Subject, s.Pool.Provider),
	}, true
}
