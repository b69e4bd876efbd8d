package store_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/leakytokens/leaky/ratelimit/store"
	"github.com/leakytokens/leaky/ratelimit/store/storetest"
)

func quotaItem(pool string, hits int64) store.Item {
	return store.Item{Key: pool + ":w", Algorithm: store.Quota, Limit: 10, Period: 3600 * sec, Hits: hits, Purchased: pool}
}

// A pool evicted at the memory bound takes its balance and its windows
// with it: the next decision on it is ErrUnseeded, never a silently empty
// counter.
func TestMemoryEvictsWholePools(t *testing.T) {
	clock := &storetest.Clock{}
	clock.Set(storetest.Start)
	m := store.NewMemory(store.MemoryOptions{Now: clock.Now, MaxKeys: 2})
	ctx := context.Background()
	for _, p := range []string{"a", "b", "c"} {
		if err := m.Seed(ctx, []store.Seed{{Item: quotaItem(p, 0), Used: 4, Purchased: 1}}); err != nil {
			t.Fatal(err)
		}
	}
	if m.Evictions() != 1 {
		t.Errorf("evictions = %d, want 1", m.Evictions())
	}
	_, err := m.Decide(ctx, []store.Item{quotaItem("a", 1), quotaItem("b", 1), quotaItem("c", 1)})
	var ue *store.UnseededError
	if !errors.As(err, &ue) || len(ue.Items) != 1 || ue.Items[0] == 2 {
		t.Fatalf("Decide after an eviction = %v, want one of the first two pools unseeded", err)
	}
}

// Ended windows are swept QuotaGrace after their end; a pool's balance
// stays BalanceTTL after its last use.
func TestMemorySweepsQuotas(t *testing.T) {
	clock := &storetest.Clock{}
	clock.Set(storetest.Start)
	m := store.NewMemory(store.MemoryOptions{Now: clock.Now})
	ctx := context.Background()
	if err := m.Seed(ctx, []store.Seed{{Item: quotaItem("p", 0), Purchased: 3}}); err != nil {
		t.Fatal(err)
	}
	take(t, m, quotaItem("p", 12)) // 10 from the window, 2 from the balance
	clock.Advance(3600*sec + store.QuotaGrace.Microseconds())
	m.Sweep()
	// The window's counter is gone; the balance (1 left) is kept.
	if d := take(t, m, quotaItem("p", 11)); !d.Allowed || d.Results[0].FromPurchased != 1 {
		t.Errorf("after the window's grace: %+v, want a fresh window and the balance of 1", d)
	}
	clock.Advance((store.BalanceTTL + time.Hour).Microseconds() + 3600*sec + store.QuotaGrace.Microseconds())
	m.Sweep()
	if _, err := m.Decide(ctx, []store.Item{quotaItem("p", 0)}); !errors.Is(err, store.ErrUnseeded) {
		t.Errorf("a balance unused for BalanceTTL: Decide = %v, want ErrUnseeded", err)
	}
}
