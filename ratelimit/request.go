package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/leakytokens/leaky/internal/contract"
	"github.com/leakytokens/leaky/internal/policy"
	"github.com/leakytokens/leaky/ratelimit/ledger"
	"github.com/leakytokens/leaky/ratelimit/store"
)

// ErrNoPolicy is returned by Service.Reserve when the service has no
// leaky-tokens policy: there are no buckets to reserve on.
var ErrNoPolicy = errors.New("no leaky-tokens policy loaded")

// Charge is one bucket or quota of a plain request's decision.
type Charge struct {
	// Scope is the bucket's (user, org, provider) or ScopeQuota.
	Scope    contract.Scope
	Key      string // the store key (contract.Descriptor.Key; a quota's window counter)
	Hits     int64  // tokens asked for; charged only when the decision admitted
	Capacity int64  // the bucket's capacity in tokens; a quota's allowance per window
	Result   store.Result
	// Reset is when the bucket is empty again (Result.ResetAfter from the
	// decision's time), or when the quota's window ends.
	Reset time.Time
	// Pool and Window are a quota's pool and window start (UTC); zero for
	// a bucket.
	Pool   ledger.Pool
	Window time.Time
}

// Reserved is the outcome of Service.Reserve.
type Reserved struct {
	// Allowed reports whether every bucket admitted the estimate; only then
	// was anything charged.
	Allowed bool
	// Reservation is the reservation to settle; zero unless Allowed.
	Reservation Reservation
	// Charges lists the buckets with a rule, in the order of the request's
	// descriptors (user, org, provider), each followed by its quota when the
	// policy sets one (Scope ScopeQuota), as the decision left them. A
	// refusing quota is a charge with Scope ScopeQuota and !Result.Allowed.
	Charges []Charge
}

// Reserve reserves r's estimate on exactly the buckets ShouldRateLimit would
// charge for the descriptors Envoy builds from r's headers
// (contract.Request.Descriptors), by the same amount (r.Hits()), all or
// nothing, and records the reservation in the ledger to be settled at the
// actual amount (Reservations.Settle). ttl ≤ 0 is the policy's reservation
// TTL. A request with no bucket (no provider, or one the policy does not
// limit) is admitted without charging anything, as ShouldRateLimit answers
// OK. A store failure is returned as an error; the caller picks its answer.
func (s *Service) Reserve(ctx context.Context, r contract.Request, ttl time.Duration) (Reserved, error) {
	return s.ReserveAs(ctx, "", r, ttl)
}

// ReserveAs is Reserve with the reservation's id chosen by the caller (""
// for a fresh one; see Reservations.ReserveAs). The reservation's owner is
// r's user, organisation, provider and tier, and its quota items are tied
// to their pools and windows, so its settlement names them. A quota pool
// the store has no state for is rebuilt from the ledger first.
func (s *Service) ReserveAs(ctx context.Context, id string, r contract.Request, ttl time.Duration) (Reserved, error) {
	if r.Estimate < 0 {
		return Reserved{}, fmt.Errorf("estimate %d: must not be negative", r.Estimate)
	}
	p := s.limits.Load().policy
	if p == nil {
		return Reserved{}, ErrNoPolicy
	}
	now := s.clock()
	plans := planRequest(p, r, now)
	items, quotas := planItems(plans)
	owner := Owner{UserID: r.User, OrgID: r.Org, Provider: r.Provider, Tier: r.Tier}
	var res Reservation
	// A reservation the store could not make in time is refused (503), so
	// it fails closed: one the store runs after its deadline charges nothing.
	ctx = store.WithFailClosed(ctx)
	dec, err := s.decideSeeded(ctx, items, quotas, func() (store.Decision, error) {
		var (
			d   store.Decision
			err error
		)
		res, d, err = s.reserve.ReserveAs(ctx, id, owner, items, quotaRefs(quotas), ttl)
		return d, err
	})
	if err != nil {
		return Reserved{}, fmt.Errorf("reserve: %w", err)
	}
	out := Reserved{Allowed: dec.Allowed, Reservation: res, Charges: make([]Charge, 0, len(items))}
	for i, r := range dec.Results {
		it := &items[i]
		c := Charge{Key: it.Key, Hits: it.Hits, Capacity: it.Limit, Result: r, Reset: now.Add(microseconds(r.ResetAfter))}
		if q := quotas[i]; q != nil {
			c.Scope, c.Pool, c.Window, c.Reset = ScopeQuota, q.pool, q.start, q.end
		}
		out.Charges = append(out.Charges, c)
	}
	for i, j := 0, 0; i < len(plans); i++ { // the buckets' scopes, in planItems' order
		if plans[i].hasItem {
			out.Charges[j].Scope = contract.Scope(plans[i].scope)
			j++
		}
		if plans[i].allowance != nil {
			j++
		}
	}
	return out, nil
}

// planRequest plans r under policy p through the same code as
// ShouldRateLimit plans the descriptors Envoy builds from r: each of
// r.Descriptors() parsed by the contract's parser and sized by planBucket,
// charged r.Hits() (a request hits_addend, 0 counting as 1). Descriptors
// with no rule are left out: they charge nothing.
func planRequest(p *policy.Policy, r contract.Request, now time.Time) []plan {
	descs := r.Descriptors()
	plans := make([]plan, 0, len(descs))
	for _, entries := range descs {
		d, ok := contract.ParseDescriptor(entries)
		if !ok {
			continue
		}
		if pl := planDescriptor(p, d, r.Hits(), now); pl.hasItem || pl.allowance != nil {
			plans = append(plans, pl)
		}
	}
	return plans
}
