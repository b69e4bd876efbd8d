package ratelimit

import (
	"context"
	"errors"
	"slices"
	"sync"
	"time"

	"github.com/leakytokens/leaky/ratelimit/ledger"
	"github.com/leakytokens/leaky/ratelimit/store"
)

// fakeLedger is an in-memory ledger.Ledger for the token API's tests
// (until ledger.Memory lands): usage and sagas with their events, each
// write all or nothing; fail makes the next writes fail.
type fakeLedger struct {
	mu      sync.Mutex
	usage   map[string]ledger.Usage
	sagas   map[string]ledger.Saga
	events  []ledger.Event
	credits map[ledger.Pool]int64 // tokens credited by TOKENS_ALLOCATED
	fail    int                   // writes left to fail
	now     func() time.Time
}

var errLedgerDown = errors.New("fake ledger down")

func newFakeLedger() *fakeLedger {
	return &fakeLedger{usage: map[string]ledger.Usage{}, sagas: map[string]ledger.Saga{}, credits: map[ledger.Pool]int64{}, now: time.Now}
}

func (l *fakeLedger) failing() bool {
	if l.fail > 0 {
		l.fail--
		return true
	}
	return false
}

func (l *fakeLedger) RecordUsage(_ context.Context, u ledger.Usage, ev ledger.Event) (bool, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.failing() {
		return false, errLedgerDown
	}
	if _, ok := l.usage[u.ID]; ok {
		return false, nil
	}
	l.usage[u.ID] = u
	l.events = append(l.events, ev)
	return true, nil
}

func (l *fakeLedger) StartSaga(_ context.Context, s ledger.Saga, ev ledger.Event) (ledger.Saga, bool, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.failing() {
		return ledger.Saga{}, false, errLedgerDown
	}
	if s.IdempotencyKey != "" {
		for _, o := range l.sagas {
			if o.UserID == s.UserID && o.IdempotencyKey == s.IdempotencyKey {
				return o, false, nil
			}
		}
	}
	s.Status, s.UpdatedAt = ledger.StatusStarted, s.CreatedAt
	l.sagas[s.ID] = s
	l.events = append(l.events, ev)
	return s, true, nil
}

func (l *fakeLedger) StepSaga(_ context.Context, id string, from, to ledger.Status, reason string, evs ...ledger.Event) (ledger.Saga, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.failing() {
		return ledger.Saga{}, errLedgerDown
	}
	s, ok := l.sagas[id]
	switch {
	case !ok:
		return ledger.Saga{}, ledger.ErrNotFound
	case s.Status != from:
		return ledger.Saga{}, ledger.ErrConflict
	}
	s.Status, s.Reason, s.UpdatedAt = to, reason, l.now()
	if to == ledger.StatusTokensAllocated {
		l.credits[s.Pool] += s.Tokens
	}
	l.sagas[id] = s
	l.events = append(l.events, evs...)
	return s, nil
}

func (l *fakeLedger) Saga(_ context.Context, id string) (ledger.Saga, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	s, ok := l.sagas[id]
	if !ok {
		return ledger.Saga{}, ledger.ErrNotFound
	}
	return s, nil
}

func (l *fakeLedger) StaleSagas(_ context.Context, before time.Time, limit int) ([]ledger.Saga, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []ledger.Saga
	for _, s := range l.sagas {
		if !s.Status.Terminal() && s.UpdatedAt.Before(before) {
			out = append(out, s)
		}
	}
	slices.SortFunc(out, func(a, b ledger.Saga) int { return a.UpdatedAt.Compare(b.UpdatedAt) })
	return out[:min(limit, len(out))], nil
}

func (l *fakeLedger) QuotaState(context.Context, ledger.Pool, time.Time) (int64, int64, error) {
	return 0, 0, nil
}

func (l *fakeLedger) Relay(context.Context, int, func(context.Context, []ledger.Event) error) (int, error) {
	return 0, nil
}

func (l *fakeLedger) Prune(context.Context, time.Time) (int, error) { return 0, nil }

func (l *fakeLedger) usages() []ledger.Usage {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]ledger.Usage, 0, len(l.usage))
	for _, u := range l.usage {
		out = append(out, u)
	}
	return out
}

func (l *fakeLedger) saga(id string) ledger.Saga {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.sagas[id]
}

// creditStore is the memory store with the purchased balances of Quota
// adjustments (the part of QUOTA's store the saga uses): each Once key is
// applied once; balances[key] is what was credited.
type creditStore struct {
	*store.Memory
	mu       sync.Mutex
	once     map[string]bool
	balances map[string]int64
	fail     int // Adjust calls left to fail
	// forwardQuota also hands Quota adjustments to the memory store (once
	// it keeps Quota items: QUOTA's part).
	forwardQuota bool
}

func newCreditStore() *creditStore {
	return &creditStore{Memory: store.NewMemory(store.MemoryOptions{MaxKeys: 1 << 16}), once: map[string]bool{}, balances: map[string]int64{}}
}

func (c *creditStore) Adjust(ctx context.Context, adj []store.Adjustment) error {
	var rest []store.Adjustment
	c.mu.Lock()
	if c.fail > 0 {
		c.fail--
		c.mu.Unlock()
		return errors.New("fake store down")
	}
	for _, a := range adj {
		if a.Item.Algorithm != store.Quota || c.forwardQuota {
			rest = append(rest, a)
		}
		if a.Item.Algorithm != store.Quota {
			continue
		}
		if a.Once != "" && c.once[a.Once] {
			continue
		}
		c.once[a.Once] = true
		c.balances[a.Item.Purchased+"|"+a.Item.Key] -= a.Delta
	}
	c.mu.Unlock()
	if len(rest) == 0 {
		return nil
	}
	return c.Memory.Adjust(ctx, rest)
}

func (c *creditStore) balance(key string) int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.balances[key]
}
