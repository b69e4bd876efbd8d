package ledger

import (
	"context"
	"fmt"
	"slices"
	"time"
)

// Relay implements Outbox. Besides skipping events other relays in flight
// claimed, it skips every event whose Key such a relay holds events of, so
// the events of one key are published in order even with several relays.
// A ctx that ends while publish runs marks nothing (as a transaction that
// cannot commit would).
func (m *Memory) Relay(ctx context.Context, n int, publish func(context.Context, []Event) error) (int, error) {
	if err := ctx.Err(); err != nil {
		return 0, fmt.Errorf("relay: %w", err)
	}
	claimed, keys := m.claim(n)
	if len(claimed) == 0 {
		return 0, nil
	}
	evs := make([]Event, len(claimed))
	for i, e := range claimed {
		evs[i] = e.ev
		evs[i].Payload = slices.Clone(e.ev.Payload)
	}
	err := publish(ctx, evs)
	if err == nil {
		err = ctx.Err()
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	now := stamp(m.now())
	for _, e := range claimed {
		e.claimed = false
		if err == nil {
			e.published = now
		}
	}
	for _, k := range keys {
		delete(m.heldKeys, k)
	}
	if err != nil {
		return 0, fmt.Errorf("relay: publish %d events: %w", len(evs), err)
	}
	return len(evs), nil
}

// claim marks up to n unpublished, unclaimed events whose keys no other
// relay holds as claimed, oldest first, and holds their keys.
func (m *Memory) claim(n int) ([]*outboxEntry, []string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var claimed []*outboxEntry
	var keys []string
	for _, e := range m.outbox {
		if len(claimed) >= n {
			break
		}
		if e.claimed || !e.published.IsZero() {
			continue
		}
		mine := slices.Contains(keys, e.ev.Key)
		if m.heldKeys[e.ev.Key] && !mine {
			continue
		}
		if !mine {
			keys = append(keys, e.ev.Key)
			m.heldKeys[e.ev.Key] = true
		}
		e.claimed = true
		claimed = append(claimed, e)
	}
	return claimed, keys
}

// Prune implements Outbox.
func (m *Memory) Prune(ctx context.Context, before time.Time) (int, error) {
	if err := ctx.Err(); err != nil {
		return 0, fmt.Errorf("prune: %w", err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	kept := m.outbox[:0]
	for _, e := range m.outbox {
		if !e.published.IsZero() && e.published.Before(before) {
			delete(m.outboxIDs, e.ev.ID)
			continue
		}
		kept = append(kept, e)
	}
	pruned := len(m.outbox) - len(kept)
	clear(m.outbox[len(kept):])
	m.outbox = kept
	return pruned, nil
}
