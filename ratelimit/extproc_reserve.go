package ratelimit

import (
	"context"
	"errors"

	ratelimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/leakytokens/leaky/internal/contract"
	"github.com/leakytokens/leaky/ratelimit/store"
)

// requestIDOf returns the request id a descriptor carries: the value of its
// one entry when that entry is (request_id, X) with X non-empty (wire
// agreement 2). Such a descriptor is no bucket.
func requestIDOf(d *ratelimitv3.RateLimitDescriptor) (string, bool) {
	es := d.GetEntries()
	if len(es) != 1 || es[0].GetKey() != contract.KeyRequestID || es[0].GetValue() == "" {
		return "", false
	}
	return es[0].GetValue(), true
}

// meteredRequest reads, for domain leaky-tokens, the request id of a
// request (the first request_id descriptor's; "" when it has none) and the
// owner its other descriptors name.
func meteredRequest(req *rlsv3.RateLimitRequest) (id string, owner Owner) {
	for _, d := range req.GetDescriptors() {
		if v, ok := requestIDOf(d); ok {
			if id == "" {
				id = v
			}
			continue
		}
		var es []contract.Entry
		for _, e := range d.GetEntries() {
			es = append(es, contract.Entry{Key: e.GetKey(), Value: e.GetValue()})
		}
		desc, ok := contract.ParseDescriptor(es)
		if !ok {
			continue
		}
		owner.Provider = desc.Provider
		switch desc.Scope {
		case contract.ScopeUser:
			owner.UserID, owner.Tier = desc.User, desc.Tier
		case contract.ScopeOrg:
			owner.OrgID = desc.Org
		}
	}
	return id, owner
}

// decideMetered decides items for a request: through the reservations,
// under the request's id, when it carries one (so the metering settles it
// at the real usage later; quotas[i] is the quota plan of items[i], nil
// for a bucket), else on the store as before. A second request
// with an id already open is refused with INVALID_ARGUMENT, charging
// nothing: Envoy sets a fresh id on every request, so only a forged or
// replayed call repeats one; an id longer than store.MaxKeyLen is refused
// so too. With the reservation ledger full (or the
// reservation too large to record in a shared store) the request is
// decided without a reservation (charged at its estimate, as without an
// id).
func (s *Service) decideMetered(ctx context.Context, req *rlsv3.RateLimitRequest, items []store.Item, quotas []*quotaPlan) (store.Decision, error) {
	if req.GetDomain() != contract.Domain {
		return s.store.Decide(ctx, items)
	}
	id, owner := meteredRequest(req)
	if id == "" {
		return s.store.Decide(ctx, items)
	}
	_, dec, err := s.reserve.ReserveAs(ctx, id, owner, items, quotaRefs(quotas), 0)
	switch {
	case errors.Is(err, ErrDuplicateReservation):
		s.metrics.invalid.WithLabelValues("duplicate_request_id").Inc()
		return store.Decision{}, status.Error(codes.InvalidArgument, "request_id is already reserved")
	case errors.Is(err, ErrReservationIDTooLong):
		s.metrics.invalid.WithLabelValues("long_request_id").Inc()
		return store.Decision{}, status.Errorf(codes.InvalidArgument, "request_id longer than %d bytes", store.MaxKeyLen)
	case errors.Is(err, ErrTooManyReservations), errors.Is(err, ErrReservationTooLarge):
		s.metrics.meter.reserveFull.Inc()
		return s.store.Decide(ctx, items)
	}
	return dec, err
}
