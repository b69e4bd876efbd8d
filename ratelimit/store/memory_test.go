package store_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/leakytokens/leaky/ratelimit/store"
	"github.com/leakytokens/leaky/ratelimit/store/storetest"
)

// TestMemoryContract runs the store contract. The two-instance case gets
// the same Memory twice: in-process state cannot be shared otherwise.
func TestMemoryContract(t *testing.T) {
	var mu sync.Mutex
	opened := map[*testing.T]*store.Memory{}
	storetest.Run(t, func(t *testing.T, now func() int64) store.Store {
		mu.Lock()
		defer mu.Unlock()
		if m := opened[t]; m != nil {
			return m
		}
		m := store.NewMemory(store.MemoryOptions{Now: now})
		opened[t] = m
		return m
	})
}

const sec = 1_000_000

func take(t *testing.T, m *store.Memory, items ...store.Item) store.Decision {
	t.Helper()
	d, err := m.Decide(context.Background(), items)
	if err != nil {
		t.Fatalf("Decide: %v", err)
	}
	return d
}

func TestMemoryDropsIdleBuckets(t *testing.T) {
	clock := &storetest.Clock{}
	clock.Set(storetest.Start)
	m := store.NewMemory(store.MemoryOptions{Now: clock.Now})
	for i := range 100 {
		take(t, m, store.Item{Key: fmt.Sprint("g", i), Limit: 10, Period: sec, Hits: 1 + int64(i%3)})
		take(t, m, store.Item{Key: fmt.Sprint("w", i), Algorithm: store.FixedWindow, Limit: 10, Period: 60 * sec, Hits: 1})
	}
	// Checks and refusals store nothing.
	take(t, m, store.Item{Key: "check", Limit: 10, Period: sec})
	take(t, m, store.Item{Key: "never", Limit: 10, Period: sec, Hits: 11})
	if got, want := m.Len(), 200; got != want {
		t.Fatalf("Len() = %d, want %d", got, want)
	}
	// GCRA buckets are idle after at most 3 s; windows at their end.
	clock.Advance(3 * sec)
	if got, want := m.Sweep(), 100; got != want {
		t.Errorf("Sweep() after 3 s = %d, want %d (the GCRA buckets)", got, want)
	}
	clock.Advance(60 * sec)
	if got, want := m.Sweep(), 100; got != want {
		t.Errorf("Sweep() after the window = %d, want %d", got, want)
	}
	if got := m.Len(); got != 0 {
		t.Errorf("Len() after sweeps = %d, want 0", got)
	}
	if got := m.Evictions(); got != 0 {
		t.Errorf("Evictions() = %d, want 0: idle drops are not evictions", got)
	}
}

func TestMemorySweepsOnAccess(t *testing.T) {
	clock := &storetest.Clock{}
	clock.Set(storetest.Start)
	m := store.NewMemory(store.MemoryOptions{Now: clock.Now, MaxKeys: 100}) // one shard
	for i := range 5 {
		take(t, m, store.Item{Key: fmt.Sprint(i), Limit: 10, Period: sec, Hits: 1})
	}
	clock.Advance(2 * sec)
	take(t, m, store.Item{Key: "new", Limit: 10, Period: sec, Hits: 1})
	if got, want := m.Len(), 1; got != want {
		t.Errorf("Len() after a decision on the shard = %d, want %d", got, want)
	}
}

func TestMemoryRefundToEmptyDeletes(t *testing.T) {
	clock := &storetest.Clock{}
	clock.Set(storetest.Start)
	m := store.NewMemory(store.MemoryOptions{Now: clock.Now})
	g := store.Item{Key: "g", Limit: 10, Period: sec}
	w := store.Item{Key: "w", Algorithm: store.FixedWindow, Limit: 10, Period: 60 * sec}
	ctx := context.Background()
	if err := m.Adjust(ctx, []store.Adjustment{{Item: g, Delta: 2}, {Item: w, Delta: 2}}); err != nil {
		t.Fatal(err)
	}
	if got := m.Len(); got != 2 {
		t.Fatalf("Len() after debits = %d, want 2", got)
	}
	if err := m.Adjust(ctx, []store.Adjustment{{Item: g, Delta: -5}, {Item: w, Delta: -5}}); err != nil {
		t.Fatal(err)
	}
	if got := m.Len(); got != 0 {
		t.Errorf("Len() after refunds to empty = %d, want 0", got)
	}
}

func TestMemoryEvictsClosestToIdle(t *testing.T) {
	clock := &storetest.Clock{}
	clock.Set(storetest.Start)
	m := store.NewMemory(store.MemoryOptions{Now: clock.Now, MaxKeys: 3})
	// TATs at now+3 s, now+1 s, now+2 s: b is closest to idle.
	take(t, m, store.Item{Key: "a", Limit: 10, Period: sec, Hits: 3})
	take(t, m, store.Item{Key: "b", Limit: 10, Period: sec, Hits: 1})
	take(t, m, store.Item{Key: "c", Limit: 10, Period: sec, Hits: 2})
	take(t, m, store.Item{Key: "d", Limit: 10, Period: sec, Hits: 5})
	if got := m.Evictions(); got != 1 {
		t.Errorf("Evictions() = %d, want 1", got)
	}
	if got := m.Len(); got != 3 {
		t.Errorf("Len() = %d, want 3", got)
	}
	remaining := func(key string) int64 {
		return take(t, m, store.Item{Key: key, Limit: 10, Period: sec}).Results[0].Remaining
	}
	for key, want := range map[string]int64{"a": 7, "b": 10, "c": 8, "d": 5} {
		if got := remaining(key); got != want {
			t.Errorf("remaining(%s) = %d, want %d", key, got, want)
		}
	}
	// With an idle bucket present, it goes first and nothing is evicted.
	clock.Advance(2*sec + 1) // c is idle now (TAT now+2 s), a and d are not
	take(t, m, store.Item{Key: "e", Limit: 10, Period: sec, Hits: 1})
	if got := m.Evictions(); got != 1 {
		t.Errorf("Evictions() after an idle drop = %d, want still 1", got)
	}
	if got := remaining("a"); got != 9 {
		t.Errorf("remaining(a) = %d, want 9: it must not be evicted", got)
	}
}

func TestMemoryBoundUnderLoad(t *testing.T) {
	const maxKeys = 1 << 12
	m := store.NewMemory(store.MemoryOptions{MaxKeys: maxKeys}) // wall clock
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for i := range 2000 {
				it := store.Item{Key: fmt.Sprint(w, ":", i), Limit: 10, Period: 3600 * sec, Hits: 1}
				if _, err := m.Decide(context.Background(), []store.Item{it}); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if got := m.Len(); got > maxKeys {
		t.Errorf("Len() = %d, want at most MaxKeys %d", got, maxKeys)
	}
	if got, min := m.Evictions(), uint64(16000-maxKeys); got < min {
		t.Errorf("Evictions() = %d, want at least %d", got, min)
	}
}

func TestMemoryRun(t *testing.T) {
	var now atomic.Int64
	now.Store(storetest.Start)
	m := store.NewMemory(store.MemoryOptions{Now: now.Load, SweepInterval: time.Millisecond})
	take(t, m, store.Item{Key: "a", Limit: 10, Period: sec, Hits: 1})
	now.Add(2 * sec)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	deadline := time.Now().Add(30 * time.Second) // a bound for a loaded machine
	for m.Len() != 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run() = %v, want nil after cancel", err)
	}
	if got := m.Len(); got != 0 {
		t.Errorf("Len() while Run sweeps = %d, want 0", got)
	}
}

func TestItemValidate(t *testing.T) {
	valid := store.Item{Key: "k", Limit: 1, Period: 1}
	if err := valid.Validate(); err != nil {
		t.Errorf("%+v.Validate() = %v, want nil", valid, err)
	}
}

func BenchmarkDecideParallel(b *testing.B) {
	m := store.NewMemory(store.MemoryOptions{})
	keys := make([]string, 10_000)
	for i := range keys {
		keys[i] = fmt.Sprintf("user:%d", i)
	}
	var next atomic.Uint64
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		items := []store.Item{{Limit: 1 << 40, Period: 1, Hits: 1}}
		for pb.Next() {
			items[0].Key = keys[next.Add(1)%uint64(len(keys))]
			if _, err := m.Decide(context.Background(), items); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// TestMemoryReserverContract runs the Reserver contract; the two-instance
// case gets the same MemoryReserver twice.
func TestMemoryReserverContract(t *testing.T) {
	var mu sync.Mutex
	opened := map[*testing.T]*store.MemoryReserver{}
	storetest.RunReserver(t, func(t *testing.T, now func() int64) store.Reserver {
		mu.Lock()
		defer mu.Unlock()
		if m := opened[t]; m != nil {
			return m
		}
		m := store.NewMemoryReserver(now, store.NewMemory(store.MemoryOptions{Now: now}))
		opened[t] = m
		return m
	})
}
