package ratelimit

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/leakytokens/leaky/ratelimit/ledger"
	"github.com/leakytokens/leaky/ratelimit/store"
)

// With a store that is a store.Reserver (Redis), reservations live in the
// store as records, so the instance that settles a reservation (the one
// Envoy's ext_proc stream reached) need not be the one that made it (the
// one ShouldRateLimit reached). A record is the reservation as JSON.

// ErrReservationTooLarge: the reservation's record would exceed
// store.MaxReservationRecord (or its id store.MaxKeyLen); nothing was
// charged.
var ErrReservationTooLarge = errors.New("reservation too large to record")

// expireBatch is how many expired records one ClaimExpired call claims.
const expireBatch = 256

// record is a reservation's stored form; the short names keep it small.
type record struct {
	Owner   Owner        `json:"o"`
	Items   []recordItem `json:"i"`
	Quotas  []QuotaRef   `json:"q,omitempty"`
	Expires int64        `json:"e"` // µs since the epoch
}

type recordItem struct {
	Key           string          `json:"k"`
	Algorithm     store.Algorithm `json:"a,omitempty"`
	Limit         int64           `json:"l"`
	Period        int64           `json:"p"`
	Hits          int64           `json:"h"`
	Shadow        bool            `json:"s,omitempty"`
	Purchased     string          `json:"b,omitempty"`
	FromPurchased int64           `json:"f,omitempty"`
}

// recordSlack is room left in a record checked before the decision for
// what the decision adds: each item's FromPurchased.
const recordSlack = 24

func encodeRecord(res *reservation) ([]byte, error) {
	rec := record{Owner: res.owner, Quotas: res.quotas, Expires: res.expires.UnixMicro(), Items: make([]recordItem, len(res.items))}
	for i, it := range res.items {
		ri := recordItem{Key: it.Key, Algorithm: it.Algorithm, Limit: it.Limit, Period: it.Period, Hits: it.Hits, Shadow: it.Shadow, Purchased: it.Purchased}
		if i < len(res.results) {
			ri.FromPurchased = res.results[i].FromPurchased
		}
		rec.Items[i] = ri
	}
	return json.Marshal(rec)
}

func decodeRecord(b []byte) (*reservation, error) {
	var rec record
	if err := json.Unmarshal(b, &rec); err != nil {
		return nil, fmt.Errorf("reservation record: %w", err)
	}
	res := &reservation{owner: rec.Owner, quotas: rec.Quotas, expires: time.UnixMicro(rec.Expires),
		items: make([]store.Item, len(rec.Items)), results: make([]store.Result, len(rec.Items))}
	for i, ri := range rec.Items {
		res.items[i] = store.Item{Key: ri.Key, Algorithm: ri.Algorithm, Limit: ri.Limit, Period: ri.Period, Hits: ri.Hits, Shadow: ri.Shadow, Purchased: ri.Purchased}
		res.results[i] = store.Result{Allowed: true, FromPurchased: ri.FromPurchased}
	}
	return res, nil
}

// reserveShared is ReserveAs on the store's records: decide, then open the
// record (SET NX). An id another instance holds is found only after the
// decision charged: that charge is refunded and the call is
// ErrDuplicateReservation. A record that cannot be opened otherwise leaves
// the charge at the estimate: the decision is returned without a
// reservation and counted (Unrecorded).
func (r *Reservations) reserveShared(ctx context.Context, id string, res *reservation, ttl time.Duration) (Reservation, store.Decision, error) {
	rec, err := encodeRecord(res)
	if err != nil {
		return Reservation{}, store.Decision{}, err
	}
	if len(id) > store.MaxKeyLen || len(rec)+recordSlack*len(res.items) > store.MaxReservationRecord {
		return Reservation{}, store.Decision{}, ErrReservationTooLarge
	}
	if err := r.claim(id); err != nil {
		return Reservation{}, store.Decision{}, err
	}
	dec, err := r.store.Decide(ctx, res.items)
	r.unclaim(id)
	if err != nil || !dec.Allowed {
		return Reservation{}, dec, err
	}
	res.results = append([]store.Result(nil), dec.Results...)
	if rec, err = encodeRecord(res); err == nil {
		err = r.shared.OpenReservation(ctx, id, rec, ttl)
	}
	switch {
	case err == nil:
		return Reservation{ID: id, Expires: res.expires}, dec, nil
	case errors.Is(err, store.ErrReservationExists):
		if aerr := r.store.Adjust(ctx, refunds(res.items, dec.Results)); aerr == nil {
			return Reservation{}, store.Decision{}, ErrDuplicateReservation
		}
	}
	r.unrecorded.Add(1)
	return Reservation{}, dec, nil
}

// refunds undoes a decision's charges: each item it charged (allowed, with
// hits), its quota share back to the balance it came from.
func refunds(items []store.Item, results []store.Result) []store.Adjustment {
	var adj []store.Adjustment
	for i, it := range items {
		if it.Hits == 0 || i >= len(results) || !results[i].Allowed {
			continue
		}
		adj = append(adj, store.Adjustment{Item: it, Delta: -it.Hits, ToPurchased: results[i].FromPurchased})
	}
	return adj
}

// takeShared removes id's record from the store. Past its expiry a record
// is not taken: the expiry scan records it.
func (r *Reservations) takeShared(ctx context.Context, id string) (*reservation, error) {
	b, ok, err := r.shared.TakeReservation(ctx, id)
	switch {
	case err != nil:
		return nil, fmt.Errorf("settle reservation: %w", err)
	case !ok:
		return nil, ErrNoReservation
	}
	return decodeRecord(b)
}

// putBackShared reopens a taken record whose settlement did not reach the
// store, for the rest of its TTL; one that cannot be reopened stays charged
// at its estimate, unrecorded.
func (r *Reservations) putBackShared(ctx context.Context, id string, res *reservation) {
	ttl := res.expires.Sub(r.now())
	rec, err := encodeRecord(res)
	if err == nil && ttl > 0 {
		err = r.shared.OpenReservation(ctx, id, rec, ttl)
	}
	if err != nil || ttl <= 0 {
		r.unrecorded.Add(1)
	}
}

// expireShared claims the store's expired records, batch by batch, and
// records each as ledger.KindExpired; every instance runs it, and each
// record is claimed by one.
func (r *Reservations) expireShared(ctx context.Context) int {
	n := 0
	for {
		recs, err := r.shared.ClaimExpired(ctx, expireBatch)
		if err != nil {
			return n
		}
		now := r.now()
		sts := make([]Settlement, 0, len(recs))
		for _, rc := range recs {
			res, err := decodeRecord(rc.Rec)
			if err != nil {
				r.unrecorded.Add(1)
				continue
			}
			sts = append(sts, res.settlement(rc.ID, ledger.KindExpired, res.estimate(), now))
		}
		r.recordAll(ctx, sts)
		n += len(sts)
		if len(recs) < expireBatch {
			return n
		}
	}
}
