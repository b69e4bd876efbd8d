package store

import (
	"context"
	"errors"
	"sort"
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
	// OpenReservation stores rec under id for ttl. An id already held (open,
	// or expired and not yet claimed) is ErrReservationExists, changing
	// nothing.
	OpenReservation(ctx context.Context, id string, rec []byte, ttl time.Duration) error
	// TakeReservation removes and returns the open record of id. ok is false
	// when there is none: never opened, taken or claimed already, or past
	// its TTL (left to ClaimExpired). Of concurrent callers at most one gets
	// a record.
	TakeReservation(ctx context.Context, id string) (rec []byte, ok bool, err error)
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

// MemoryReserver is the in-process Reserver: the reference the contract
// (package storetest) holds other Reservers to, and a shared record book
// for tests that model several instances in one process. It is safe for
// concurrent use.
type MemoryReserver struct {
	now func() int64 // µs since the epoch

	mu   sync.Mutex
	recs map[string]memRecord
}

type memRecord struct {
	rec     []byte
	expires int64 // µs
}

var _ Reserver = (*MemoryReserver)(nil)

// NewMemoryReserver returns an empty MemoryReserver reading the time (µs
// since the epoch) from now; nil is the system clock.
func NewMemoryReserver(now func() int64) *MemoryReserver {
	if now == nil {
		now = func() int64 { return time.Now().UnixMicro() }
	}
	return &MemoryReserver{now: now, recs: map[string]memRecord{}}
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
	if r, ok := m.recs[id]; ok && now < r.expires+ReservationGrace.Microseconds() {
		return ErrReservationExists
	}
	if len(m.recs) >= maxMemoryReservations {
		m.dropStale(now)
		if len(m.recs) >= maxMemoryReservations {
			return ErrReservationsFull
		}
	}
	m.recs[id] = memRecord{rec: append([]byte(nil), rec...), expires: now + ttl.Microseconds()}
	return nil
}

// dropStale drops records past their grace, as Redis's TTLs do.
func (m *MemoryReserver) dropStale(now int64) {
	for id, r := range m.recs {
		if now >= r.expires+ReservationGrace.Microseconds() {
			delete(m.recs, id)
		}
	}
}

// TakeReservation implements Reserver.
func (m *MemoryReserver) TakeReservation(ctx context.Context, id string) ([]byte, bool, error) {
	if err := ctx.Err(); err != nil {
		return nil, false, err
	}
	now := m.now()
	m.mu.Lock()
	defer m.mu.Unlock()
	r, ok := m.recs[id]
	if !ok || now >= r.expires {
		return nil, false, nil
	}
	delete(m.recs, id)
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
	var due []exp
	grace := ReservationGrace.Microseconds()
	for id, r := range m.recs {
		switch {
		case now >= r.expires+grace: // dropped unclaimed, as a Redis TTL drops it
			delete(m.recs, id)
		case now >= r.expires:
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
