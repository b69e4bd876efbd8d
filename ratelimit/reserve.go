package ratelimit

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"syscall"
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
	store      store.Store
	now        func() time.Time
	defaultTTL func() time.Duration

	mu      sync.Mutex
	open    map[string]*reservation
	pending int // Reserve calls between their slot check and their record
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

// DefaultReservationTTL is the TTL of a reservation asked for with ttl ≤ 0
// when the ledger has no policy to read it from.
const DefaultReservationTTL = 10 * time.Minute

// NewReservations returns a ledger over st; now is the clock (nil =
// time.Now) and defaultTTL the TTL of reservations asked for with ttl ≤ 0
// (nil = DefaultReservationTTL).
func NewReservations(st store.Store, now func() time.Time, defaultTTL func() time.Duration) *Reservations {
	if now == nil {
		now = time.Now
	}
	if defaultTTL == nil {
		defaultTTL = func() time.Duration { return DefaultReservationTTL }
	}
	return &Reservations{store: st, now: now, defaultTTL: defaultTTL, open: map[string]*reservation{}}
}

// Reserve decides items all or nothing, each Item.Hits being the estimate.
// When admitted it returns a reservation to settle; when refused the
// Reservation is zero and nothing is charged.
func (r *Reservations) Reserve(ctx context.Context, items []store.Item, ttl time.Duration) (Reservation, store.Decision, error) {
	if ttl <= 0 {
		ttl = r.defaultTTL()
	}
	// Hold a slot before charging anything, so a full ledger never charges.
	r.mu.Lock()
	if len(r.open)+r.pending >= maxOpenReservations {
		r.mu.Unlock()
		return Reservation{}, store.Decision{}, ErrTooManyReservations
	}
	r.pending++
	r.mu.Unlock()
	dec, err := r.store.Decide(ctx, items)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.pending--
	if err != nil || !dec.Allowed {
		return Reservation{}, dec, err
	}
	var b [16]byte
	_, _ = rand.Read(b[:])
	res := Reservation{ID: hex.EncodeToString(b[:]), Expires: r.now().Add(ttl)}
	r.open[res.ID] = &reservation{items: append([]store.Item(nil), items...), expires: res.Expires}
	return res, dec, nil
}

// Settle charges the reservation at actual tokens instead of its estimate,
// at most once. A store call that failed without running leaves the
// reservation open, to be settled again; one that timed out (it may have
// run) closes it at its estimate rather than risk applying twice.
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
		if errors.Is(err, syscall.ECONNREFUSED) {
			// The store was not reached, so nothing ran: settle again later.
			r.mu.Lock()
			r.open[id] = res
			r.mu.Unlock()
		}
		// Any other failure may have been applied (a timeout after the
		// write); applying it again could refund or debit twice, so the
		// reservation stays at its estimate.
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
