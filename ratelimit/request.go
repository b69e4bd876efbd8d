package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/leakytokens/leaky/internal/contract"
	"github.com/leakytokens/leaky/internal/policy"
	"github.com/leakytokens/leaky/ratelimit/store"
)

// ErrNoPolicy is returned by Service.Reserve when the service has no
// leaky-tokens policy: there are no buckets to reserve on.
var ErrNoPolicy = errors.New("no leaky-tokens policy loaded")

// Charge is one bucket of a plain request's decision.
type Charge struct {
	Scope    contract.Scope
	Key      string // the bucket's store key (contract.Descriptor.Key)
	Hits     int64  // tokens asked for; charged only when the decision admitted
	Capacity int64  // the bucket's capacity in tokens
	Result   store.Result
}

// Reserved is the outcome of Service.Reserve.
type Reserved struct {
	// Allowed reports whether every bucket admitted the estimate; only then
	// was anything charged.
	Allowed bool
	// Reservation is the reservation to settle; zero unless Allowed.
	Reservation Reservation
	// Charges lists the buckets with a rule, in the order of the request's
	// descriptors (user, org, provider), as the decision left them.
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
	if r.Estimate < 0 {
		return Reserved{}, fmt.Errorf("estimate %d: must not be negative", r.Estimate)
	}
	p := s.limits.Load().policy
	if p == nil {
		return Reserved{}, ErrNoPolicy
	}
	plans := planRequest(p, r)
	items := make([]store.Item, len(plans))
	for i := range plans {
		items[i] = plans[i].item
	}
	res, dec, err := s.reserve.Reserve(ctx, items, ttl)
	if err != nil {
		return Reserved{}, fmt.Errorf("reserve: %w", err)
	}
	out := Reserved{Allowed: dec.Allowed, Reservation: res, Charges: make([]Charge, len(plans))}
	for i := range plans {
		it := &plans[i].item
		out.Charges[i] = Charge{Scope: contract.Scope(plans[i].scope), Key: it.Key, Hits: it.Hits, Capacity: it.Limit, Result: dec.Results[i]}
	}
	return out, nil
}

// planRequest plans r under policy p through the same code as
// ShouldRateLimit plans the descriptors Envoy builds from r: each of
// r.Descriptors() parsed by the contract's parser and sized by planBucket,
// charged r.Hits() (a request hits_addend, 0 counting as 1). Descriptors
// with no rule are left out: they charge nothing.
func planRequest(p *policy.Policy, r contract.Request) []plan {
	descs := r.Descriptors()
	plans := make([]plan, 0, len(descs))
	for _, entries := range descs {
		d, ok := contract.ParseDescriptor(entries)
		if !ok {
			continue
		}
		if pl := planBucket(p, d, r.Hits()); pl.hasItem {
			plans = append(plans, pl)
		}
	}
	return plans
}
