package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/leakytokens/leaky/internal/contract"
	"github.com/leakytokens/leaky/internal/policy"
	"github.com/leakytokens/leaky/ratelimit/gcra"
	"github.com/leakytokens/leaky/ratelimit/ledger"
	"github.com/leakytokens/leaky/ratelimit/store"
)

// ScopeQuota is the scope of a refusal by a quota (the OVER_LIMIT body's
// "scope", a Charge's Scope): the window's allowance and the purchased
// balance are spent.
const ScopeQuota contract.Scope = "quota"

// quotaPlan is a descriptor's quota: one store.Quota item on the pool's
// counter of the window holding the planning time.
type quotaPlan struct {
	item       store.Item
	pool       ledger.Pool
	start, end time.Time // the window, UTC
	allowance  int64
	window     int64 // the window's length in seconds, for RateLimit-Policy
}

// planQuota plans the quota of desc under p at now, charged hits: a user's
// by their tier's quota for the provider (an unknown tier uses the default
// tier, as the buckets do), an organisation's by the organisation quota.
// Nil when the policy sets none for it.
//
// The window's counter key is the bucket's key and the window's start in
// Unix seconds; the pool's purchased-balance key is the bucket's key (the
// store keeps each algorithm under its own prefix).
func planQuota(p *policy.Policy, desc contract.Descriptor, hits int64, now time.Time) *quotaPlan {
	var (
		q    policy.Quota
		ok   bool
		pool ledger.Pool
	)
	switch desc.Scope {
	case contract.ScopeUser:
		tier := desc.Tier
		if _, known := p.Tiers[tier]; !known {
			tier = p.DefaultTier
		}
		q, ok = p.UserQuota(tier, desc.Provider)
		pool = ledger.Pool{Scope: string(contract.ScopeUser), Subject: desc.User, Provider: desc.Provider}
	case contract.ScopeOrg:
		q, ok = p.OrgQuota(desc.Provider)
		pool = ledger.Pool{Scope: string(contract.ScopeOrg), Subject: desc.Org, Provider: desc.Provider}
	}
	if !ok {
		return nil
	}
	start, end := q.Window(now)
	return &quotaPlan{
		item: store.Item{
			Key:       contract.QuotaKey(contract.Scope(pool.Scope), pool.Subject, pool.Provider, start.Unix()),
			Algorithm: store.Quota,
			Limit:     q.Allowance,
			Period:    max(end.Sub(now).Microseconds(), 1),
			Hits:      min(hits, gcra.MaxSpan),
			Purchased: contract.PurchasedKey(contract.Scope(pool.Scope), pool.Subject, pool.Provider),
		},
		pool:      pool,
		start:     start,
		end:       end,
		allowance: q.Allowance,
		window:    int64(end.Sub(start) / time.Second),
	}
}

// decideSeeded runs decide (a store decision over items) and, when the
// store answers ErrUnseeded, seeds the pools it names from the ledger and
// runs it once more. quotas[i] is the quota plan of items[i] (nil for a
// bucket). A second ErrUnseeded is returned as it is: a store failure.
func (s *Service) decideSeeded(ctx context.Context, items []store.Item, quotas []*quotaPlan, decide func() (store.Decision, error)) (store.Decision, error) {
	dec, err := decide()
	var ue *store.UnseededError
	if !errors.As(err, &ue) {
		return dec, err
	}
	if err := s.seed(ctx, items, quotas, ue.Items); err != nil {
		return store.Decision{}, err
	}
	return decide()
}

// seed rebuilds the pools of items[idx] in the store from the ledger's
// record (zeros without a ledger). The credits the record counts whose
// fast-path credit is still to come (sagas in TOKENS_ALLOCATED) go with
// the seed as their Once keys, so that credit does not add them again. A
// credit that found the pool unseeded after the record was read changed
// its seed generation: the store refuses the seed (store.ErrStaleSeed),
// and the record is read once more; refused again, the seed fails.
func (s *Service) seed(ctx context.Context, items []store.Item, quotas []*quotaPlan, idx []int) error {
	sd, ok := s.store.(store.Seeder)
	if !ok {
		return fmt.Errorf("seed quotas: the store keeps no quotas: %w", store.ErrUnseeded)
	}
	its := make([]store.Item, len(idx))
	for j, i := range idx {
		if i < 0 || i >= len(items) || quotas[i] == nil {
			return fmt.Errorf("seed quotas: item %d is not a quota: %w", i, store.ErrUnseeded)
		}
		its[j] = items[i]
	}
	err := s.seedFromRecord(ctx, sd, its, quotas, idx)
	if errors.Is(err, store.ErrStaleSeed) {
		err = s.seedFromRecord(ctx, sd, its, quotas, idx)
	}
	return err
}

// seedFromRecord seeds its (the items at idx) from the record, under the
// seed generations read before it.
func (s *Service) seedFromRecord(ctx context.Context, sd store.Seeder, its []store.Item, quotas []*quotaPlan, idx []int) error {
	gens, err := sd.Generations(ctx, its)
	if err != nil {
		return fmt.Errorf("seed quotas: %w", err)
	}
	seeds := make([]store.Seed, 0, len(idx))
	for j, i := range idx {
		q := quotas[i]
		var st ledger.QuotaState
		if s.record != nil {
			if st, err = s.record.QuotaState(ctx, q.pool, q.start); err != nil {
				return fmt.Errorf("seed quotas: ledger: %w", err)
			}
		}
		seeds = append(seeds, store.Seed{Item: its[j], Used: st.Used, Purchased: st.Purchased,
			Once: sagaOnceKeys(st.Pending), WindowOnce: sagaOnceKeys(st.PendingWindow), Generation: gens[j]})
	}
	if err := sd.Seed(ctx, seeds); err != nil {
		return fmt.Errorf("seed quotas: %w", err)
	}
	return nil
}

// quotaRefs ties the quota items among items (quotas[i] non-nil) to their
// pools and windows, for a reservation.
func quotaRefs(quotas []*quotaPlan) []QuotaRef {
	var refs []QuotaRef
	for i, q := range quotas {
		if q != nil {
			refs = append(refs, QuotaRef{Item: i, Pool: q.pool, Window: q.start})
		}
	}
	return refs
}

// clock is the time quota windows are planned at.
func (s *Service) clock() time.Time {
	if s.now != nil {
		return s.now()
	}
	return time.Now()
}
