package ledger

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"sync"
	"time"
)

// DefaultMaxUsageIDs is how many recent usage ids a Memory remembers for
// idempotency unless told otherwise.
const DefaultMaxUsageIDs = 1 << 20

// MemoryOptions configure a Memory; the zero value is the default.
type MemoryOptions struct {
	// MaxUsageIDs bounds the usage ids remembered for RecordUsage's
	// idempotency (default DefaultMaxUsageIDs: about 100 MiB with UUIDs as
	// ids, twice that with ids of the full 128 bytes): a
	// usage recorded again after that many later usages is counted twice.
	// Settlements are retried within seconds, so the bound is far beyond any
	// real retry.
	MaxUsageIDs int
	// Now is the clock that stamps sagas and published events (default
	// time.Now).
	Now func() time.Time
}

// Memory is the in-memory Ledger: the reference implementation, and the
// record of `leaky dev` on the memory store. Safe for concurrent use; every
// write is atomic with its events under one lock. It keeps usage as
// per-pool aggregates (used per window, purchased balance spent) plus the
// MaxUsageIDs most recent usage ids, sagas and their credits whole (one
// entry per purchase), and the outbox until Prune removes published
// events. Nothing survives the process.
type Memory struct {
	now    func() time.Time
	maxIDs int

	mu            sync.Mutex
	usageIDs      map[string]struct{}
	idRing        []string // usage ids in the order recorded, a ring of maxIDs
	idNext        int
	windowUsed    map[poolWindow]int64 // Σ FromWindow
	purchasedUsed map[Pool]int64       // Σ FromPurchased
	credits       map[Pool]int64       // persistent credits
	windowCredits map[poolWindow]int64 // window-only credits
	sagaCredits   map[string]credit    // by saga id, to revoke on FAILED
	allocated     map[string]struct{}  // ids of sagas in TOKENS_ALLOCATED
	sagas         map[string]Saga
	sagaByKey     map[userKey]string
	outbox        []*outboxEntry // in the order written
	outboxIDs     map[string]struct{}
	heldKeys      map[string]bool // event keys a Relay in flight has claimed events of
}

type poolWindow struct {
	pool   Pool
	window int64 // µs since the epoch
}

type userKey struct{ user, key string }

type credit struct {
	pool   Pool
	window *int64 // nil: persistent
	tokens int64
}

type outboxEntry struct {
	ev        Event
	claimed   bool      // by a Relay in flight
	published time.Time // zero until published
}

var _ Ledger = (*Memory)(nil)

// NewMemory returns an empty Memory.
func NewMemory(o MemoryOptions) *Memory {
	if o.MaxUsageIDs <= 0 {
		o.MaxUsageIDs = DefaultMaxUsageIDs
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return &Memory{
		now: o.Now, maxIDs: o.MaxUsageIDs,
		usageIDs: map[string]struct{}{}, windowUsed: map[poolWindow]int64{}, purchasedUsed: map[Pool]int64{},
		credits: map[Pool]int64{}, windowCredits: map[poolWindow]int64{}, sagaCredits: map[string]credit{},
		sagas: map[string]Saga{}, sagaByKey: map[userKey]string{}, outboxIDs: map[string]struct{}{},
		heldKeys: map[string]bool{}, allocated: map[string]struct{}{},
	}
}

// stamp is t in UTC at microsecond precision, what PostgreSQL keeps.
func stamp(t time.Time) time.Time { return t.UTC().Truncate(time.Microsecond) }

// appendEvents adds evs to the outbox after checking, with m.mu held, that
// none reuses the id of an event still in it.
func (m *Memory) appendEvents(evs []Event) error {
	for i, e := range evs {
		_, dup := m.outboxIDs[e.ID]
		if dup || slices.ContainsFunc(evs[:i], func(o Event) bool { return o.ID == e.ID }) {
			return fmt.Errorf("event %s exists: %w", e.ID, ErrConflict)
		}
	}
	for _, e := range evs {
		e.OccurredAt = stamp(e.OccurredAt)
		e.Payload = slices.Clone(e.Payload)
		m.outbox = append(m.outbox, &outboxEntry{ev: e})
		m.outboxIDs[e.ID] = struct{}{}
	}
	return nil
}

// RecordUsage implements Recorder.
func (m *Memory) RecordUsage(ctx context.Context, u Usage, ev Event) (bool, error) {
	if err := ctx.Err(); err != nil {
		return false, fmt.Errorf("record usage: %w", err)
	}
	if err := u.Validate(); err != nil {
		return false, fmt.Errorf("record usage: %w", err)
	}
	if err := ev.Validate(); err != nil {
		return false, fmt.Errorf("record usage: %w", err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.usageIDs[u.ID]; ok {
		return false, nil
	}
	if err := m.appendEvents([]Event{ev}); err != nil {
		return false, fmt.Errorf("record usage: %w", err)
	}
	for _, q := range u.Quotas {
		m.windowUsed[poolWindow{q.Pool, q.Window.UnixMicro()}] += q.FromWindow
		m.purchasedUsed[q.Pool] += q.FromPurchased
	}
	if len(m.idRing) < m.maxIDs {
		m.idRing = append(m.idRing, u.ID)
	} else {
		delete(m.usageIDs, m.idRing[m.idNext])
		m.idRing[m.idNext] = u.ID
		m.idNext = (m.idNext + 1) % m.maxIDs
	}
	m.usageIDs[u.ID] = struct{}{}
	return true, nil
}

// QuotaState implements Quotas.
func (m *Memory) QuotaState(ctx context.Context, p Pool, window time.Time) (QuotaState, error) {
	if err := ctx.Err(); err != nil {
		return QuotaState{}, fmt.Errorf("quota state: %w", err)
	}
	if err := p.Validate(); err != nil {
		return QuotaState{}, fmt.Errorf("quota state: %w", err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	pw := poolWindow{p, window.UnixMicro()}
	st := QuotaState{Used: m.windowUsed[pw] - m.windowCredits[pw], Purchased: m.credits[p] - m.purchasedUsed[p]}
	for id := range m.allocated {
		switch c := m.sagaCredits[id]; {
		case c.pool != p:
		case c.window == nil:
			st.Pending = append(st.Pending, id)
		case *c.window == pw.window:
			st.PendingWindow = append(st.PendingWindow, id)
		}
	}
	slices.Sort(st.Pending)
	slices.Sort(st.PendingWindow)
	return st, nil
}

// StartSaga implements Sagas. A saga that is not WindowOnly keeps no
// Window; a zero CreatedAt is now.
func (m *Memory) StartSaga(ctx context.Context, s Saga, ev Event) (Saga, bool, error) {
	if err := ctx.Err(); err != nil {
		return Saga{}, false, fmt.Errorf("start saga: %w", err)
	}
	if err := s.Validate(); err != nil {
		return Saga{}, false, fmt.Errorf("start saga: %w", err)
	}
	if err := ev.Validate(); err != nil {
		return Saga{}, false, fmt.Errorf("start saga: %w", err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	uk := userKey{s.UserID, s.IdempotencyKey}
	if s.IdempotencyKey != "" {
		if id, ok := m.sagaByKey[uk]; ok {
			return m.sagas[id], false, nil
		}
	}
	if _, ok := m.sagas[s.ID]; ok {
		return Saga{}, false, fmt.Errorf("start saga: saga %s exists: %w", s.ID, ErrConflict)
	}
	if err := m.appendEvents([]Event{ev}); err != nil {
		return Saga{}, false, fmt.Errorf("start saga: %w", err)
	}
	s.Status, s.Reason = StatusStarted, ""
	if s.CreatedAt.IsZero() {
		s.CreatedAt = m.now()
	}
	s.CreatedAt = stamp(s.CreatedAt)
	s.UpdatedAt = s.CreatedAt
	s.Window = stamp(s.Window)
	if !s.WindowOnly {
		s.Window = time.Time{}
	}
	m.sagas[s.ID] = s
	if s.IdempotencyKey != "" {
		m.sagaByKey[uk] = s.ID
	}
	return s, true, nil
}

// StepSaga implements Sagas. A step ValidStep refuses is ErrInvalid. A
// step to FAILED from TOKENS_ALLOCATED revokes the saga's credit (the
// compensation of the fast path's credit), so QuotaState no longer counts
// it. The reason is cut by TruncateReason.
func (m *Memory) StepSaga(ctx context.Context, id string, from, to Status, reason string, evs ...Event) (Saga, error) {
	if err := ctx.Err(); err != nil {
		return Saga{}, fmt.Errorf("step saga: %w", err)
	}
	if !ValidStep(from, to) {
		return Saga{}, fmt.Errorf("step saga: %s → %s: %w", from, to, ErrInvalid)
	}
	if err := ValidateEvents(evs...); err != nil {
		return Saga{}, fmt.Errorf("step saga: %w", err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	s, ok := m.sagas[id]
	switch {
	case !ok:
		return Saga{}, fmt.Errorf("step saga %s: %w", id, ErrNotFound)
	case s.Status != from:
		return Saga{}, fmt.Errorf("step saga %s: status %s, not %s: %w", id, s.Status, from, ErrConflict)
	}
	if err := m.appendEvents(evs); err != nil {
		return Saga{}, fmt.Errorf("step saga %s: %w", id, err)
	}
	s.Status, s.UpdatedAt = to, stamp(m.now())
	if to == StatusFailed {
		s.Reason = TruncateReason(reason)
	}
	switch to {
	case StatusTokensAllocated:
		c := credit{pool: s.Pool, tokens: s.Tokens}
		if s.WindowOnly {
			w := s.Window.UnixMicro()
			c.window = &w
		}
		m.sagaCredits[id] = c
		m.allocated[id] = struct{}{}
		m.applyCredit(c, 1)
	case StatusCompleted:
		delete(m.allocated, id)
	case StatusFailed:
		delete(m.allocated, id)
		if c, ok := m.sagaCredits[id]; ok {
			delete(m.sagaCredits, id)
			m.applyCredit(c, -1)
		}
	}
	m.sagas[id] = s
	return s, nil
}

func (m *Memory) applyCredit(c credit, sign int64) {
	if c.window == nil {
		m.credits[c.pool] += sign * c.tokens
		return
	}
	m.windowCredits[poolWindow{c.pool, *c.window}] += sign * c.tokens
}

// Saga implements Sagas.
func (m *Memory) Saga(ctx context.Context, id string) (Saga, error) {
	if err := ctx.Err(); err != nil {
		return Saga{}, fmt.Errorf("saga: %w", err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	s, ok := m.sagas[id]
	if !ok {
		return Saga{}, fmt.Errorf("saga %s: %w", id, ErrNotFound)
	}
	return s, nil
}

// StaleSagas implements Sagas; ties in UpdatedAt are ordered by id.
func (m *Memory) StaleSagas(ctx context.Context, before time.Time, limit int) ([]Saga, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("stale sagas: %w", err)
	}
	m.mu.Lock()
	var out []Saga
	for _, s := range m.sagas {
		if !s.Status.Terminal() && s.UpdatedAt.Before(before) {
			out = append(out, s)
		}
	}
	m.mu.Unlock()
	slices.SortFunc(out, func(a, b Saga) int {
		return cmp.Or(a.UpdatedAt.Compare(b.UpdatedAt), cmp.Compare(a.ID, b.ID))
	})
	return out[:min(len(out), max(limit, 0))], nil
}
