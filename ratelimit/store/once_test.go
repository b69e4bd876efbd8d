package store

import (
	"context"
	"fmt"
	"testing"
	"time"
)

// A settlement's short-lived Once keys neither outlive their OnceTTL nor
// push a credit's week-long key out, however many there are.
func TestMemoryShortOnceKeys(t *testing.T) {
	now := int64(1_700_000_000_000_000)
	m := NewMemory(MemoryOptions{Now: func() int64 { return now }})
	ctx := context.Background()
	g := Item{Key: "g", Algorithm: GCRA, Limit: 10, Period: 1_000_000}
	credit := Adjustment{Item: g, Delta: 1, Once: "saga:1"}
	if err := m.Adjust(ctx, []Adjustment{credit}); err != nil {
		t.Fatal(err)
	}
	m.quotas.mu.Lock()
	for i := range maxOnceKeys + 1 {
		m.quotas.seen(fmt.Sprint("settle:", i), now, time.Minute)
	}
	kept := m.quotas.applied("saga:1", now)
	m.quotas.mu.Unlock()
	if !kept {
		t.Errorf("a credit's Once key was pushed out by %d short-lived keys", maxOnceKeys+1)
	}
	settle := Adjustment{Item: g, Delta: 1, Once: "settle:x:0", OnceTTL: time.Minute}
	for range 2 {
		if err := m.Adjust(ctx, []Adjustment{settle}); err != nil {
			t.Fatal(err)
		}
	}
	if d, _ := m.Decide(ctx, []Item{g}); d.Results[0].Remaining != 8 {
		t.Errorf("remaining %d after a credit and a settle applied twice with one Once key, want 8", d.Results[0].Remaining)
	}
	now += 2 * time.Minute.Microseconds()
	m.quotas.mu.Lock()
	gone := !m.quotas.applied("settle:x:0", now)
	m.quotas.mu.Unlock()
	if !gone {
		t.Errorf("a settle's Once key outlived its OnceTTL")
	}
}
