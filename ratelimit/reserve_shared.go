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
// store.MaxReservationRecord; nothing was charged.
var ErrReservationTooLarge = errors.New("reservation too large to record")

// expireBatch is how many expired records one ClaimExpired call claims.
const expireBatch = 256

// record is a reservation's stored form, its items' results aside; the
// short names keep it small.
type record struct {
	Owner   Owner        `json:"o"`
	Items   []recordItem `json:"i"`
	Quotas  []QuotaRef   `json:"q,omitempty"`
	Expires int64        `json:"e"` // µs since the epoch
}

type recordItem struct {
	Key       string          `json:"k"`
	Algorithm store.Algorithm `json:"a,omitempty"`
	Limit     int64           `json:"l"`
	Period    int64           `json:"p"`
	Hits      int64           `json:"h"`
	Shadow    bool            `json:"s,omitempty"`
	Purchased string          `json:"b,omitempty"`
}

// encodeRecord is res's record without its results: a store keeps them
// beside it (store.ReservedRecord).
func encodeRecord(res *reservation) ([]byte, error) {
	rec := record{Owner: res.owner, Quotas: res.quotas, Expires: res.expires.UnixMicro(), Items: make([]recordItem, len(res.items))}
	for i, it := range res.items {
		rec.Items[i] = recordItem{Key: it.Key, Algorithm: it.Algorithm, Limit: it.Limit, Period: it.Period, Hits: it.Hits, Shadow: it.Shadow, Purchased: it.Purchased}
	}
	return json.Marshal(rec)
}

// decodeRecord reads a stored record: a store.ReservedRecord of
// encodeRecord's bytes.
func decodeRecord(b []byte) (*reservation, error) {
	js, fromP, err := store.ParseReservedRecord(b)
	if err != nil {
		return nil, err
	}
	var rec record
	if err := json.Unmarshal(js, &rec); err != nil {
		return nil, fmt.Errorf("reservation record: %w", err)
	}
	if len(fromP) != len(rec.Items) {
		return nil, fmt.Errorf("reservation record: %d results for %d items", len(fromP), len(rec.Items))
	}
	res := &reservation{owner: rec.Owner, quotas: rec.Quotas, expires: time.UnixMicro(rec.Expires),
		items: make([]store.Item, len(rec.Items)), results: make([]store.Result, len(rec.Items))}
	for i, ri := range rec.Items {
		res.items[i] = store.Item{Key: ri.Key, Algorithm: ri.Algorithm, Limit: ri.Limit, Period: ri.Period, Hits: ri.Hits, Shadow: ri.Shadow, Purchased: ri.Purchased}
		res.results[i] = store.Result{Allowed: true, FromPurchased: fromP[i]}
	}
	return res, nil
}

// reserveShared is ReserveAs on the store's records: one DecideReserve,
// which charges and opens the record atomically, in one round trip: an
// admitted decision always has its record, and an id already held
// (by any instance) is ErrDuplicateReservation, charging nothing.
func (r *Reservations) reserveShared(ctx context.Context, id string, res *reservation, ttl time.Duration) (Reservation, store.Decision, error) {
	rec, err := encodeRecord(res)
	if err != nil {
		return Reservation{}, store.Decision{}, err
	}
	if err := store.ValidateDecideReserve(id, rec, len(res.items), ttl); err != nil {
		return Reservation{}, store.Decision{}, fmt.Errorf("%w: %w", ErrReservationTooLarge, err)
	}
	if err := r.claim(id); err != nil {
		return Reservation{}, store.Decision{}, err
	}
	dec, err := r.shared.DecideReserve(ctx, res.items, id, rec, ttl)
	r.unclaim(id)
	switch {
	case errors.Is(err, store.ErrReservationExists):
		return Reservation{}, store.Decision{}, ErrDuplicateReservation
	case err != nil || !dec.Allowed:
		return Reservation{}, dec, err
	}
	return Reservation{ID: id, Expires: res.expires}, dec, nil
}

// takeShared takes id's record from the store under a nonce of its own,
// retrying within ctx (each attempt gets half the time left), so a take
// whose answer was lost gets its record back. Past its expiry a record is
// not taken: the expiry scan records it.
func (r *Reservations) takeShared(ctx context.Context, id string) (*reservation, error) {
	nonce := newID()
	for wait := 5 * time.Millisecond; ; wait = min(2*wait, 200*time.Millisecond) {
		b, ok, err := r.takeAttempt(ctx, id, nonce)
		switch {
		case err == nil && !ok:
			return nil, ErrNoReservation
		case err == nil:
			res, err := decodeRecord(b)
			if err != nil {
				r.unrecorded.Add(1)
			}
			return res, err
		case errors.Is(err, store.ErrInvalidReservation):
			return nil, fmt.Errorf("settle reservation: %w", err)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("settle reservation: %w", err)
		case <-t.C:
		}
	}
}

// takeAttempt is one TakeReservation, given half of ctx's time left.
func (r *Reservations) takeAttempt(ctx context.Context, id, nonce string) ([]byte, bool, error) {
	if d, ok := ctx.Deadline(); ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, time.Until(d)/2)
		defer cancel()
	}
	return r.shared.TakeReservation(ctx, id, nonce)
}

// putBackShared reopens a taken record whose settlement did not reach the
// store, for the rest of its TTL.
func (r *Reservations) putBackShared(ctx context.Context, id string, res *reservation) error {
	ttl := res.expires.Sub(r.now())
	if ttl <= 0 {
		return errors.New("reopen reservation: expired")
	}
	rec, err := encodeRecord(res)
	if err != nil {
		return err
	}
	return r.shared.OpenReservation(ctx, id, store.ReservedRecord(rec, res.results), ttl)
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
