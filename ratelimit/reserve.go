package ratelimit

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/leakytokens/leaky/ratelimit/ledger"
	"github.com/leakytokens/leaky/ratelimit/store"
)

// Errors of the reservation ledger.
var (
	// ErrNoReservation: the reservation is unknown, already settled, or
	// expired (and so settled at its estimate).
	ErrNoReservation = errors.New("no such open reservation")
	// ErrTooManyReservations: the ledger is full; nothing was charged.
	ErrTooManyReservations = errors.New("too many open reservations")
	// ErrDuplicateReservation: a reservation with that id is open or being
	// made; nothing was charged.
	ErrDuplicateReservation = errors.New("duplicate reservation id")
	// ErrReservationIDTooLong: the id is longer than store.MaxKeyLen bytes;
	// nothing was charged.
	ErrReservationIDTooLong = errors.New("reservation id longer than 512 bytes")
)

// maxOpenReservations bounds the ledger's memory.
const maxOpenReservations = 1 << 20

// Reservations reserves an estimate on several buckets at once and later
// settles each at the actual amount: Settle applies actual − estimate to
// every bucket (a refund, or a debit that may leave the bucket in debt). A
// reservation not settled within its TTL expires and stays charged at the
// estimate, as it does when the process stops: a crash never un-charges a
// token. It is safe for concurrent use.
//
// Where the reservations live depends on the store: with a store.Reserver
// (Redis) they are records in the store, so every instance sharing it
// settles any reservation, once, and each expired one is recorded by one
// instance (reserve_shared.go); with any other store (the memory store,
// which no other process shares) they live in this process's map.
//
// The overshoot bound: buckets admit at most their capacity in estimates,
// so what the buckets are over at any time is at most the sum of
// (actual − estimate) over the reservations in flight.
type Reservations struct {
	store      store.Store
	shared     store.Reserver // nil: the reservations live in open
	now        func() time.Time
	defaultTTL func() time.Duration

	mu      sync.Mutex
	open    map[string]*reservation
	claimed map[string]bool // ids of ReserveAs calls between their slot check and their record
	record  func(context.Context, Settlement)

	unrecorded atomic.Uint64
}

type reservation struct {
	owner   Owner
	items   []store.Item
	results []store.Result // as admitted: what each quota item took from its balance
	quotas  []QuotaRef
	expires time.Time
}

// Owner is who a reservation charges, as the request's descriptors (or a
// REST caller) name them; the ledger records it with the usage.
type Owner struct {
	UserID   string
	OrgID    string // "" when no organisation is charged
	Provider string
	Tier     string
}

// QuotaRef ties one of a reservation's items, a store.Quota item, to the
// ledger's pool and window it charges.
type QuotaRef struct {
	Item   int // index into the reservation's items
	Pool   ledger.Pool
	Window time.Time // the window's start, UTC
}

// Settlement is a settled reservation: what the ledger records.
type Settlement struct {
	ID       string
	Kind     ledger.Kind
	Owner    Owner
	Estimate int64 // the largest hits among the items: the request's estimate
	Actual   int64
	// Quotas splits Actual per quota pool between the window's allowance
	// and the purchased balance, as the store applied it.
	Quotas []ledger.QuotaCharge
	At     time.Time
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
	r := &Reservations{store: st, now: now, defaultTTL: defaultTTL, open: map[string]*reservation{}, claimed: map[string]bool{}}
	r.shared, _ = st.(store.Reserver)
	return r
}

// Unrecorded counts admitted charges left at their estimate without a
// reservation to settle or expire: a record the store handed back that
// could not be decoded. None of them reaches the recorder.
func (r *Reservations) Unrecorded() uint64 { return r.unrecorded.Load() }

// claim holds id for a ReserveAs in flight, so a second one with the same
// id (or a full ledger) is refused before anything is charged.
func (r *Reservations) claim(id string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	switch {
	case len(r.open)+len(r.claimed) >= maxOpenReservations:
		return ErrTooManyReservations
	case r.open[id] != nil || r.claimed[id]:
		return ErrDuplicateReservation
	}
	r.claimed[id] = true
	return nil
}

func (r *Reservations) unclaim(id string) {
	r.mu.Lock()
	delete(r.claimed, id)
	r.mu.Unlock()
}

// SetRecorder sets the function every settlement is handed to after the
// store applied it (Settle, and expiry with ledger.KindExpired), before
// Settle returns. Call it before the ledger is used; nil records nothing.
func (r *Reservations) SetRecorder(record func(context.Context, Settlement)) {
	r.mu.Lock()
	r.record = record
	r.mu.Unlock()
}

// Reserve is ReserveAs with a fresh random id, no owner and no quotas.
func (r *Reservations) Reserve(ctx context.Context, items []store.Item, ttl time.Duration) (Reservation, store.Decision, error) {
	return r.ReserveAs(ctx, "", Owner{}, items, nil, ttl)
}

// ReserveAs decides items all or nothing, each Item.Hits being the
// estimate. When admitted it records a reservation with id (a fresh random
// id when "") to settle; when refused the Reservation is zero and nothing
// is charged. An id already open (or being reserved), here or on another
// instance sharing the store, is ErrDuplicateReservation, and an id longer
// than store.MaxKeyLen is ErrReservationIDTooLong; neither charges
// anything. With a shared store, a reservation whose record would be too
// large is ErrReservationTooLarge, before anything is charged; and the
// decision and the record are one atomic store call: an admitted decision
// always has its record.
func (r *Reservations) ReserveAs(ctx context.Context, id string, owner Owner, items []store.Item, quotas []QuotaRef, ttl time.Duration) (Reservation, store.Decision, error) {
	if ttl <= 0 {
		ttl = r.defaultTTL()
	}
	if id == "" {
		id = newID()
	}
	if len(id) > store.MaxKeyLen {
		return Reservation{}, store.Decision{}, ErrReservationIDTooLong
	}
	if r.shared != nil {
		res := &reservation{owner: owner, items: items, quotas: quotas, expires: r.now().Add(ttl)}
		return r.reserveShared(ctx, id, res, ttl)
	}
	// Hold a slot (and the id) before charging anything, so a full ledger
	// or a duplicate id never charges.
	if err := r.claim(id); err != nil {
		return Reservation{}, store.Decision{}, err
	}
	dec, err := r.store.Decide(ctx, items)
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.claimed, id)
	if err != nil || !dec.Allowed {
		return Reservation{}, dec, err
	}
	res := Reservation{ID: id, Expires: r.now().Add(ttl)}
	r.open[id] = &reservation{
		owner:   owner,
		items:   append([]store.Item(nil), items...),
		results: append([]store.Result(nil), dec.Results...),
		quotas:  append([]QuotaRef(nil), quotas...),
		expires: res.Expires,
	}
	return res, dec, nil
}

// Settle charges the reservation at actual tokens instead of its estimate,
// at most once, and hands the settlement (of kind) to the recorder. Its
// store calls run within ctx's deadline (settleTimeout when ctx has none).
// A store call that failed without running leaves the reservation open, to
// be settled again (when it cannot be reopened it is recorded expired, at
// its estimate); one that timed out (it may have run) is tried again past
// ctx's deadline, idempotent by its Once keys (adjustOnce), and only when
// every attempt failed is it closed at its estimate.
func (r *Reservations) Settle(ctx context.Context, id string, actual int64, kind ledger.Kind) (Settlement, error) {
	if actual < 0 {
		return Settlement{}, fmt.Errorf("actual %d: must not be negative", actual)
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, settleTimeout)
		defer cancel()
	}
	res, err := r.take(ctx, id)
	if err != nil {
		return Settlement{}, err
	}
	r.mu.Lock()
	record := r.record
	r.mu.Unlock()
	adj := make([]store.Adjustment, 0, len(res.items))
	for i, it := range res.items {
		if it.Hits == 0 || actual == it.Hits {
			continue
		}
		a := store.Adjustment{Item: it, Delta: actual - it.Hits, Once: settleOnce(id, i), OnceTTL: settleOnceTTL}
		if it.Algorithm == store.Quota {
			a.ToPurchased = res.results[i].FromPurchased
		}
		adj = append(adj, a)
	}
	if len(adj) > 0 {
		if err := r.adjustOnce(ctx, adj); err != nil {
			if errors.Is(err, syscall.ECONNREFUSED) {
				// The store was not reached, so nothing ran: settle again
				// later. A reservation that cannot be reopened exists
				// nowhere else now: it is recorded expired, at its estimate.
				if perr := r.putBack(ctx, id, res); perr != nil {
					r.recordAll(ctx, []Settlement{res.settlement(id, ledger.KindExpired, res.estimate(), r.now())})
				}
				return Settlement{}, fmt.Errorf("settle reservation: %w", err)
			}
			// Any other failure may have been applied (a timeout after the
			// write) and was retried (adjustOnce) until its time ran out;
			// not knowing, the reservation is recorded at its estimate.
			actual = res.estimate()
			st := res.settlement(id, kind, actual, r.now())
			if record != nil {
				record(ctx, st)
			}
			return st, fmt.Errorf("settle reservation: %w", err)
		}
	}
	st := res.settlement(id, kind, actual, r.now())
	if record != nil {
		record(ctx, st)
	}
	return st, nil
}

// take removes id's open reservation from wherever it lives. One past its
// TTL is ErrNoReservation: from the map it is recorded expired here, in a
// shared store the expiry scan records it.
func (r *Reservations) take(ctx context.Context, id string) (*reservation, error) {
	if r.shared != nil {
		return r.takeShared(ctx, id)
	}
	r.mu.Lock()
	res, ok := r.open[id]
	expired := ok && !r.now().Before(res.expires)
	if ok {
		delete(r.open, id)
	}
	r.mu.Unlock()
	if !ok {
		return nil, ErrNoReservation
	}
	if expired {
		r.recordAll(ctx, []Settlement{res.settlement(id, ledger.KindExpired, res.estimate(), r.now())})
		return nil, ErrNoReservation
	}
	return res, nil
}

// putBack reopens a reservation taken for a settlement that did not run.
func (r *Reservations) putBack(ctx context.Context, id string, res *reservation) error {
	if r.shared != nil {
		return r.putBackShared(ctx, id, res)
	}
	r.mu.Lock()
	r.open[id] = res
	r.mu.Unlock()
	return nil
}

// newID is a fresh random id: 32 hex digits.
func newID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// estimate is the reservation's estimate: the largest hits among its items
// (every item of one request is charged the same estimate).
func (res *reservation) estimate() int64 {
	var e int64
	for _, it := range res.items {
		e = max(e, it.Hits)
	}
	return e
}

// settlement describes res settled at actual: per quota pool, the share of
// actual that stays on the purchased balance and on the window, following
// the store's rule (a refund returns to the balance first, up to what was
// taken from it; a debit goes to the window).
func (res *reservation) settlement(id string, kind ledger.Kind, actual int64, at time.Time) Settlement {
	st := Settlement{ID: id, Kind: kind, Owner: res.owner, Estimate: res.estimate(), Actual: actual, At: at}
	for _, q := range res.quotas {
		if q.Item < 0 || q.Item >= len(res.items) {
			continue
		}
		est, fromP := res.items[q.Item].Hits, res.results[q.Item].FromPurchased
		fromW := est - fromP
		if d := actual - est; d >= 0 {
			fromW += d
		} else {
			back := min(-d, fromP)
			fromP -= back
			fromW -= -d - back
		}
		st.Quotas = append(st.Quotas, ledger.QuotaCharge{Pool: q.Pool, Window: q.Window, FromWindow: fromW, FromPurchased: fromP})
	}
	return st
}

func (r *Reservations) recordAll(ctx context.Context, sts []Settlement) {
	r.mu.Lock()
	record := r.record
	r.mu.Unlock()
	if record == nil {
		return
	}
	for _, st := range sts {
		record(ctx, st)
	}
}

// Open is the number of open reservations in this process's map: 0 when
// they live in a shared store (which counts them across instances).
func (r *Reservations) Open() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.open)
}

// Expire drops every reservation past its TTL (they stay charged at their
// estimate), hands each to the recorder as ledger.KindExpired, and returns
// how many. With a shared store it claims the expired records there: each
// is recorded by exactly one of the instances sharing the store.
func (r *Reservations) Expire(ctx context.Context) int {
	if r.shared != nil {
		return r.expireShared(ctx)
	}
	now := r.now()
	r.mu.Lock()
	var sts []Settlement
	for id, res := range r.open {
		if !now.Before(res.expires) {
			delete(r.open, id)
			sts = append(sts, res.settlement(id, ledger.KindExpired, res.estimate(), now))
		}
	}
	r.mu.Unlock()
	r.recordAll(ctx, sts)
	return len(sts)
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
			r.Expire(ctx)
		}
	}
}
