package ratelimit

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/leakytokens/leaky/ratelimit/store"
)

// Errors of the reservation ledger.
var (
	// ErrNoReservation: the reservation is unknown, already settled, or
	// expired (and so settled at its estimate).
	ErrNoReservation = errors.New("no such open reservation")
	// ErrTooManyReservations: the ledger is full; nothing was charged.
	ErrTooManyReservations = errors.New("too many open reservations")
)

// maxOpenReservations bounds the ledger's memory.
const maxOpenReservations = 1 << 20

// Reservations reserves an estimate on several buckets at once and later
// settles each at the actual amount: Settle applies actual − estimate to
// every bucket (a refund, or a debit that may leave the bucket in debt). A
// reservation not settled within its TTL expires and stays charged at the
// estimate, as it does when the process stops: a crash never un-charges a
// token. The ledger lives in this process; it is safe for concurrent use.
//
// The overshoot bound: buckets admit at most their capacity in estimates,
// so what the buckets are over at any time is at most the sum of
// (actual − estimate) over the reservations in flight.
type Reservations struct {
	store store.Store
	now   func() time.Time

	mu   sync.Mutex
	open map[string]*reservation
}

type reservation struct {
	items   []store.Item
	expires time.Time
}

// Reservation is an admitted reservation.
type Reservation struct {
	ID      string    // pass to Settle
	Expires time.Time // after this it is settled at the estimate
}

// NewReservations returns a ledger over st; now is the clock (nil = time.Now).
func NewReservations(st store.Store, now func() time.Time) *Reservations {
	if now == nil {
		now = time.Now
	}
	return &Reservations{store: st, now: now, open: map[string]*reservation{}}
}

// Reserve decides items all or nothing, each Item.Hits being the estimate.
// When admitted it returns a reservation to settle; when refused the
// Reservation is zero and nothing is charged.
func (r *Reservations) Reserve(ctx context.Context, items []store.Item, ttl time.Duration) (Reservation, store.Decision, error) {
	r.mu.Lock()
	full := len(r.open) >= maxOpenReservations
	r.mu.Unlock()
	if full {
		return Reservation{}, store.Decision{}, ErrTooManyReservations
	}
	dec, err := r.store.Decide(ctx, items)
	if err != nil || !dec.Allowed {
		return Reservation{}, dec, err
	}
	var b [16]byte
	_, _ = rand.Read(b[:])
	res := Reservation{ID: hex.EncodeToString(b[:]), Expires: r.now().Add(ttl)}
	r.mu.Lock()
	r.open[res.ID] = &reservation{items: append([]store.Item(nil), items...), expires: res.Expires}
	r.mu.Unlock()
	return res, dec, nil
}

// Settle charges the reservation at actual tokens instead of its estimate,
// once. A failed store call leaves the reservation open, to be settled again.
func (r *Reservations) Settle(ctx context.Context, id string, actual int64) error {
	if actual < 0 {
		return fmt.Errorf("actual %d: must not be negative", actual)
	}
	r.mu.Lock()
	res, ok := r.open[id]
	if ok && !r.now().Before(res.expires) {
		delete(r.open, id)
		ok = false
	}
	if ok {
		delete(r.open, id)
	}
	r.mu.Unlock()
	if !ok {
		return ErrNoReservation
	}
	adj := make([]store.Adjustment, 0, len(res.items))
	for _, it := range res.items {
		if it.Hits == 0 || actual == it.Hits {
			continue
		}
		adj = append(adj, store.Adjustment{Item: it, Delta: actual - it.Hits})
	}
	if len(adj) == 0 {
		return nil
	}
	if err := r.store.Adjust(ctx, adj); err != nil {
		r.mu.Lock()
		r.open[id] = res
		r.mu.Unlock()
		return fmt.Errorf("settle reservation: %w", err)
	}
	return nil
}

// Open is the number of open reservations.
func (r *Reservations) Open() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.open)
}

// Expire drops every reservation past its TTL (they stay charged at their
// estimate) and returns how many.
func (r *Reservations) Expire() int {
	now := r.now()
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for id, res := range r.open {
		if !now.Before(res.expires) {
			delete(r.open, id)
			n++
		}
	}
	return n
}

// Run expires reservations every second until ctx ends.
func (r *Reservations) Run(ctx context.Context) error {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			r.Expire()
		}
	}
}
