package ratelimit

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/leakytokens/leaky/internal/contract"
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
	case !orgIDPattern.MatchString(orgID):
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
	var used, purchased int64
	if l := a.s.record; l != nil {
		if used, purchased, err = l.QuotaState(ctx, pool, window); err != nil {
			return 0, err
		}
	}
	return it.Limit - used + purchased, nil
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

// windowItem resolves a window-only saga's window counter item.
func (a *tokenAPI) windowItem(s ledger.Saga, tier string) (store.Item, time.Time, bool) {
	q := a.quotaPlanOf(s.Pool, tier)
	if q == nil {
		return store.Item{}, time.Time{}, false
	}
	return q.item, q.start, true
}
