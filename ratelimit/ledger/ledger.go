// Package ledger is the contract between the token service and its durable
// record (DESIGN §4, §5): every settled usage, every purchase saga and the
// tokens it credited, and the transactional outbox of events a relay
// publishes to Kafka. It declares the types and the small interfaces the
// service consumes; the PostgreSQL adapter (package pgledger) and the
// in-memory implementation (Memory, the reference every other
// implementation is tested against, package ledgertest) implement them.
//
// Every write is one transaction with its events: a usage is recorded with
// its event, a saga step with its event (and, for the allocation, the
// credit), or nothing is. Writes are idempotent: a usage whose ID was
// recorded before, and a saga step whose saga is no longer in the step's
// starting status, change nothing.
//
// The quota counters of the fast path (Redis or the memory store) are a
// cache of what this record implies: Quotas answers how much of a window a
// pool used, what purchased balance it has left and which of the credits it
// counts the fast path has yet to apply, so a lost cache is rebuilt from
// here without counting a purchase twice.
package ledger

import (
	"context"
	"errors"
	"time"
)

// Errors of every implementation.
var (
	// ErrNotFound: no saga with that id.
	ErrNotFound = errors.New("not found")
	// ErrConflict: the saga is not in the status the step starts from.
	ErrConflict = errors.New("conflict")
)

// Pool names a quota pool: a user's or an organisation's allowance for one
// provider ("*" never appears here: the provider is the request's).
type Pool struct {
	Scope    string // "user" or "org" (contract.ScopeUser, contract.ScopeOrg)
	Subject  string // the user id or organisation id
	Provider string
}

// Kind says how a usage was settled.
type Kind string

// The kinds of usage.
const (
	// KindConsume: a REST consume, settled at the provider's reported usage
	// (or at the estimate when the usage was missing or absurd).
	KindConsume Kind = "consume"
	// KindMetered: a request through the gateway, settled by the metering
	// (ext_proc) at the usage read from the response.
	KindMetered Kind = "metered"
	// KindExpired: a reservation nobody settled within its TTL, settled at
	// its estimate.
	KindExpired Kind = "expired"
)

// QuotaCharge is what one usage took from one quota pool: FromWindow from
// the allowance of the window starting at Window (it may be negative for a
// refund), FromPurchased from the pool's purchased balance.
type QuotaCharge struct {
	Pool          Pool
	Window        time.Time // start of the quota window charged, UTC
	FromWindow    int64
	FromPurchased int64
}

// Usage is one settled usage. ID identifies it for idempotency: the
// reservation's id (the request id on the gateway path, the consume's id on
// the REST path).
type Usage struct {
	ID       string
	Kind     Kind
	UserID   string
	OrgID    string // "" when no organisation was charged
	Provider string
	Tier     string
	Estimate int64 // tokens reserved at admission
	Actual   int64 // tokens settled
	Quotas   []QuotaCharge
	At       time.Time // when it was settled
}

// Status is a purchase saga's status.
type Status string

// The saga's statuses, in order; FAILED ends a saga that was compensated.
const (
	StatusStarted         Status = "STARTED"
	StatusPaymentReserved Status = "PAYMENT_RESERVED"
	StatusTokensAllocated Status = "TOKENS_ALLOCATED"
	StatusCompleted       Status = "COMPLETED"
	StatusFailed          Status = "FAILED"
)

// Terminal reports whether no step leaves s.
func (s Status) Terminal() bool { return s == StatusCompleted || s == StatusFailed }

// Saga is a purchase: Tokens credited to Pool once the saga reaches
// TOKENS_ALLOCATED. With WindowOnly the credit adds to the allowance of
// the window starting at Window only (it expires with that window);
// otherwise it adds to the pool's purchased balance, which never expires.
type Saga struct {
	ID             string // UUID, chosen by the caller
	UserID         string // who bought (and whose idempotency key it is)
	Pool           Pool
	Tokens         int64
	WindowOnly     bool
	Window         time.Time // with WindowOnly: the window's start, UTC
	IdempotencyKey string    // "" when none; unique per UserID otherwise
	Status         Status
	Reason         string // why it FAILED
	CreatedAt      time.Time
	UpdatedAt      time.Time
}

// Event is one outbox row: what the relay publishes to Kafka. Key orders
// events: every event of one user (or organisation) has the same key.
type Event struct {
	ID         string    // UUID; consumers deduplicate on it
	Type       string    // one of the Type* constants, also a Kafka header
	Key        string    // the Kafka message key
	Schema     int       // payload schema version
	OccurredAt time.Time // UTC
	Payload    []byte    // JSON
}

// Event types.
const (
	TypeUsage              = "usage"               // a REST consume settled
	TypeReservationSettled = "reservation-settled" // a metered or expired reservation settled
	TypePurchase           = "purchase"            // a saga step (the payload names the status)
)

// Recorder writes settled usage.
type Recorder interface {
	// RecordUsage writes u and ev in one transaction. When a usage with
	// u.ID exists it writes nothing and returns false.
	RecordUsage(ctx context.Context, u Usage, ev Event) (bool, error)
}

// Sagas keeps purchase sagas.
type Sagas interface {
	// StartSaga writes s (status STARTED) and ev in one transaction and
	// returns it with created true. When s.IdempotencyKey is set and a saga
	// of s.UserID has that key, it writes nothing and returns that saga
	// with created false (the caller compares the payloads).
	StartSaga(ctx context.Context, s Saga, ev Event) (saga Saga, created bool, err error)
	// StepSaga moves saga id from status from to status to, writing evs in
	// the same transaction; to TOKENS_ALLOCATED it also credits the saga's
	// tokens to its pool. reason is kept with FAILED. A saga not in status
	// from is ErrConflict (and nothing is written); an unknown id
	// ErrNotFound.
	StepSaga(ctx context.Context, id string, from, to Status, reason string, evs ...Event) (Saga, error)
	// Saga returns saga id, or ErrNotFound.
	Saga(ctx context.Context, id string) (Saga, error)
	// StaleSagas returns up to limit sagas in a non-terminal status last
	// updated before t, oldest first.
	StaleSagas(ctx context.Context, before time.Time, limit int) ([]Saga, error)
}

// QuotaState is what the record implies for one quota pool and window.
type QuotaState struct {
	// Used is what the pool used of the window: Σ FromWindow of its usage
	// in that window, minus the window-only credits for it of allocated
	// (TOKENS_ALLOCATED or COMPLETED) purchases.
	Used int64
	// Purchased is the pool's purchased balance: the persistent credits of
	// allocated purchases minus Σ FromPurchased.
	Purchased int64
	// Pending are the ids, sorted, of the pool's sagas still in
	// TOKENS_ALLOCATED whose persistent credit Purchased counts, and
	// PendingWindow of those whose window-only credit Used counts: the
	// fast path's credit of each (store Adjust, Once "saga:"+id) is still
	// to come, so a store seeded from this state marks those Once keys
	// applied (store.Seed) and the credit is not counted twice.
	Pending, PendingWindow []string
}

// Quotas answers what the record implies for a quota pool, to rebuild the
// fast path's counters.
type Quotas interface {
	// QuotaState returns pool p's state for the window starting at window,
	// read at one instant (one snapshot: a saga allocated meanwhile is
	// either counted and pending, or neither).
	QuotaState(ctx context.Context, p Pool, window time.Time) (QuotaState, error)
}

// Outbox is the relay's side of the outbox.
type Outbox interface {
	// Relay claims up to n unpublished events, oldest first, locked so that
	// concurrent relays skip them (FOR UPDATE SKIP LOCKED), calls publish
	// with them and, when publish returns nil, marks them published in the
	// same transaction. When publish fails nothing is marked. It returns how
	// many it published.
	Relay(ctx context.Context, n int, publish func(context.Context, []Event) error) (int, error)
	// Prune deletes events published before t and returns how many.
	Prune(ctx context.Context, before time.Time) (int, error)
}

// Ledger is everything a store of the record provides.
type Ledger interface {
	Recorder
	Sagas
	Quotas
	Outbox
}
