package store

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// A Reserver keeps the records of open reservations (package ratelimit's
// Reservations) where every service instance that shares the store
// reaches them, so any instance settles a reservation another one made,
// exactly once. A store that keeps its state in one process has no need of
// it: the service then keeps its reservations in a map of its own.
//
// A record is opaque bytes of at most MaxReservationRecord, under an id of
// at most MaxKeyLen bytes. It is open from OpenReservation until its TTL
// has passed, by the store's clock; then only ClaimExpired hands it out.
// The store drops a record ReservationGrace after its TTL whether or not
// it was claimed, so memory stays bounded when no instance scans.
type Reserver interface {
	// DecideReserve is Store.Decide of items and, in the same atomic step,
	// the opening of id's record when the decision admits: either the
	// charge and the record both happen, or neither does. The record stored
	// is ReservedRecord(rec, the decision's results). An id already held
	// (open, expired and unclaimed) is ErrReservationExists, deciding and
	// charging nothing; a refused decision stores nothing. id, rec and ttl
	// are checked by ValidateDecideReserve first.
	DecideReserve(ctx context.Context, items []Item, id string, rec []byte, ttl time.Duration) (Decision, error)
	// OpenReservation stores rec under id for ttl. An id already held (open,
	// or expired and not yet claimed) is ErrReservationExists, changing
	// nothing.
	OpenReservation(ctx context.Context, id string, rec []byte, ttl time.Duration) error
	// TakeReservation removes and returns the open record of id, leasing it
	// to nonce for ReservationLease: a call with the same id and nonce
	// within the lease returns the same record again, so a take whose answer
	// was lost (a timeout after it ran) is retried safely. ok is false when
	// there is neither a lease of nonce nor an open record: never opened,
	// taken (under another nonce) or claimed already, or past its TTL (left
	// to ClaimExpired). Of concurrent callers with distinct nonces at most
	// one gets a record.
	TakeReservation(ctx context.Context, id, nonce string) (rec []byte, ok bool, err error)
	// ClaimExpired removes and returns up to limit records past their TTL.
	// Each record is handed to exactly one caller, across every instance
	// sharing the store, and never also to TakeReservation.
	ClaimExpired(ctx context.Context, limit int) ([]ReservationRecord, error)
}

// ReservationRecord is a record ClaimExpired handed out.
type ReservationRecord struct {
	ID  string
	Rec []byte
}

// Bounds and lifetimes of reservation records.
const (
	// MaxReservationRecord bounds a record's bytes.
	MaxReservationRecord = 4 << 10
	// ReservationGrace is how long a record past its TTL waits to be
	// claimed before the store drops it.
	ReservationGrace = time.Hour
	// ReservationLease is how long a taken record stays with its taker's
	// nonce, for a retry of the take.
	ReservationLease = time.Minute
	// MaxNonceLen bounds TakeReservation's nonce.
	MaxNonceLen = 64
	// maxResultLen bounds one item's share of ReservedRecord's trailer: a
	// comma and an int64 in decimal.
	maxResultLen = 21
	// maxMemoryReservations bounds MemoryReserver's records.
	maxMemoryReservations = 1 << 20
)

// Errors of a Reserver.
var (
	ErrReservationExists = errors.New("reservation id already held")
	// ErrInvalidReservation: an empty or oversize id, an oversize record,
	// or a TTL below a microsecond; nothing was stored.
	ErrInvalidReservation = errors.New("invalid reservation")
	// ErrReservationsFull: the store holds as many records as it may.
	ErrReservationsFull = errors.New("too many reservation records")
)

// ValidateReservation is the check every Reserver applies in
// OpenReservation.
func ValidateReservation(id string, rec []byte, ttl time.Duration) error {
	switch {
	case id == "" || len(id) > MaxKeyLen:
		return errors.Join(ErrInvalidReservation, errors.New("id must be 1 to 512 bytes"))
	case len(rec) > MaxReservationRecord:
		return errors.Join(ErrInvalidReservation, errors.New("record larger than 4 KiB"))
	case ttl < time.Microsecond:
		return errors.Join(ErrInvalidReservation, errors.New("ttl below 1 µs"))
	}
	return nil
}

// ValidateDecideReserve is the check every Reserver applies in
// DecideReserve: ValidateReservation, with room in the record for the
// trailer ReservedRecord adds for n items.
func ValidateDecideReserve(id string, rec []byte, n int, ttl time.Duration) error {
	if err := ValidateReservation(id, rec, ttl); err != nil {
		return err
	}
	if len(rec)+1+maxResultLen*n > MaxReservationRecord {
		return errors.Join(ErrInvalidReservation, errors.New("record and its results larger than 4 KiB"))
	}
	return nil
}

// ReservedRecord is the record DecideReserve stores: rec, a newline, then
// each result's FromPurchased in decimal, comma-separated, in item order.
func ReservedRecord(rec []byte, results []Result) []byte {
	out := append(append([]byte(nil), rec...), '\n')
	for i, r := range results {
		if i > 0 {
			out = append(out, ',')
		}
		out = strconv.AppendInt(out, r.FromPurchased, 10)
	}
	return out
}

// ParseReservedRecord splits a ReservedRecord into rec and the
// FromPurchased of each item. rec must hold no newline (JSON does not).
func ParseReservedRecord(b []byte) (rec []byte, fromPurchased []int64, err error) {
	i := strings.LastIndexByte(string(b), '\n')
	if i < 0 {
		return nil, nil, errors.New("reserved record: no results")
	}
	rec, tail := b[:i], string(b[i+1:])
	if tail == "" {
		return rec, []int64{}, nil
	}
	for f := range strings.SplitSeq(tail, ",") {
		v, err := strconv.ParseInt(f, 10, 64)
		if err != nil {
			return nil, nil, fmt.Errorf("reserved record: %w", err)
		}
		fromPurchased = append(fromPurchased, v)
	}
	return rec, fromPurchased, nil
}

// MemoryReserver is the in-process Reserver: the reference the contract
// (package storetest) holds other Reservers to, and a shared record book
// for tests that model several instances in one process. It decides on
// the Store it is given. It is safe for concurrent use.
type MemoryReserver struct {
	now func() int64 // µs since the epoch
	st  Store

	mu     sync.Mutex
	recs   map[string]memRecord
	leases map[[2]string]memRecord // by id and nonce; expires is the lease's end
}

type memRecord struct {
	rec     []byte
	expires int64 // µs
}

var _ Reserver = (*MemoryReserver)(nil)

// NewMemoryReserver returns an empty MemoryReserver reading the time (µs
// since the epoch) from now (nil is the system clock) and deciding
// DecideReserve's items on st.
func NewMemoryReserver(now func() int64, st Store) *MemoryReserver {
	if now == nil {
		now = func() int64 { return time.Now().UnixMicro() }
	}
	return &MemoryReserver{now: now, st: st, recs: map[string]memRecord{}, leases: map[[2]string]memRecord{}}
}

// DecideReserve implements Reserver: the lock held across the decision
// makes the check, the decision and the record one step.
func (m *MemoryReserver) DecideReserve(ctx context.Context, items []Item, id string, rec []byte, ttl time.Duration) (Decision, error) {
	if err := ctx.Err(); err != nil {
		return Decision{}, err
	}
	if err := ValidateDecideReserve(id, rec, len(items), ttl); err != nil {
		return Decision{}, err
	}
	now := m.now()
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.room(id, now); err != nil {
		return Decision{}, err
	}
	dec, err := m.st.Decide(ctx, items)
	if err != nil || !dec.Allowed {
		return dec, err
	}
	m.recs[id] = memRecord{rec: ReservedRecord(rec, dec.Results), expires: now + ttl.Microseconds()}
	return dec, nil
}

// room reports whether id may be opened: not held, and room for it.
func (m *MemoryReserver) room(id string, now int64) error {
	if r, ok := m.recs[id]; ok && now < r.expires+ReservationGrace.Microseconds() {
		return ErrReservationExists
	}
	if len(m.recs)+len(m.leases) >= maxMemoryReservations {
		m.dropStale(now)
		if len(m.recs)+len(m.leases) >= maxMemoryReservations {
			return ErrReservationsFull
		}
	}
	return nil
}

// OpenReservation implements Reserver.
func (m *MemoryReserver) OpenReservation(ctx context.Context, id string, rec []byte, ttl time.Duration) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := ValidateReservation(id, rec, ttl); err != nil {
		return err
	}
	now := m.now()
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.room(id, now); err != nil {
		return err
	}
	m.recs[id] = memRecord{rec: append([]byte(nil), rec...), expires: now + ttl.Microseconds()}
	return nil
}

// dropStale drops records past their grace and leases past their end, as
// Redis's TTLs do.
func (m *MemoryReserver) dropStale(now int64) {
	for id, r := range m.recs {
		if now >= r.expires+ReservationGrace.Microseconds() {
			delete(m.recs, id)
		}
	}
	for k, l := range m.leases {
		if now >= l.expires {
			delete(m.leases, k)
		}
	}
}

// TakeReservation implements Reserver.
func (m *MemoryReserver) TakeReservation(ctx context.Context, id, nonce string) ([]byte, bool, error) {
	if err := ctx.Err(); err != nil {
		return nil, false, err
	}
	if nonce == "" || len(nonce) > MaxNonceLen {
		return nil, false, fmt.Errorf("%w: nonce must be 1 to %d bytes", ErrInvalidReservation, MaxNonceLen)
	}
	now := m.now()
	m.mu.Lock()
	defer m.mu.Unlock()
	k := [2]string{id, nonce}
	if l, ok := m.leases[k]; ok && now < l.expires {
		return l.rec, true, nil
	}
	r, ok := m.recs[id]
	if !ok || now >= r.expires {
		return nil, false, nil
	}
	delete(m.recs, id)
	m.leases[k] = memRecord{rec: r.rec, expires: now + ReservationLease.Microseconds()}
	return r.rec, true, nil
}

// ClaimExpired implements Reserver, oldest first.
func (m *MemoryReserver) ClaimExpired(ctx context.Context, limit int) ([]ReservationRecord, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	now := m.now()
	m.mu.Lock()
	defer m.mu.Unlock()
	type exp struct {
		id string
		at int64
	}
	m.dropStale(now) // records past their grace: dropped unclaimed, as a Redis TTL drops them
	var due []exp
	for id, r := range m.recs {
		if now >= r.expires {
			due = append(due, exp{id, r.expires})
		}
	}
	sort.Slice(due, func(i, j int) bool { return due[i].at < due[j].at })
	out := make([]ReservationRecord, 0, min(limit, len(due)))
	for _, d := range due[:min(limit, len(due))] {
		out = append(out, ReservationRecord{ID: d.id, Rec: m.recs[d.id].rec})
		delete(m.recs, d.id)
	}
	return out, nil
}
