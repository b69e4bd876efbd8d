package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"syscall"
	"testing"
	"time"

	"github.com/leakytokens/leaky/ratelimit/gcra"
	"github.com/leakytokens/leaky/ratelimit/store"
)

// clock is a settable clock for the memory store (µs) and the ledger.
type clock struct{ us int64 }

func (c *clock) micros() int64       { return c.us }
func (c *clock) time() time.Time     { return time.UnixMicro(c.us) }
func (c *clock) add(d time.Duration) { c.us += d.Microseconds() }

func bucket(t *testing.T, key string, capacity int64, rate float64, hits int64) store.Item {
	t.Helper()
	l, err := gcra.NewLimit(capacity, rate)
	if err != nil {
		t.Fatal(err)
	}
	return store.Item{Key: key, Algorithm: store.GCRA, Limit: l.Burst, Period: l.Interval, Hits: hits}
}

func remainingOf(t *testing.T, st store.Store, it store.Item) int64 {
	t.Helper()
	it.Hits = 0
	d, err := st.Decide(context.Background(), []store.Item{it})
	if err != nil {
		t.Fatal(err)
	}
	return d.Results[0].Remaining
}

func TestReservationsSettle(t *testing.T) {
	ctx := context.Background()
	clk := &clock{us: 1_700_000_000_000_000}
	mem := store.NewMemory(store.MemoryOptions{Now: clk.micros})
	ledger := NewReservations(mem, clk.time, nil)
	user := bucket(t, "u", 1000, 1, 0)
	prov := bucket(t, "p", 10000, 1, 0)
	reserve := func(n int64) (Reservation, store.Decision) {
		t.Helper()
		u, p := user, prov
		u.Hits, p.Hits = n, n
		res, dec, err := ledger.Reserve(ctx, []store.Item{u, p}, time.Minute)
		if err != nil {
			t.Fatalf("Reserve(%d): %v", n, err)
		}
		return res, dec
	}

	// Refund: reserve 1000, use 300.
	res, dec := reserve(1000)
	if !dec.Allowed || res.ID == "" {
		t.Fatalf("Reserve(1000) = %+v, %+v", res, dec)
	}
	if got := remainingOf(t, mem, user); got != 0 {
		t.Fatalf("remaining while reserved = %d, want 0", got)
	}
	if err := ledger.Settle(ctx, res.ID, 300); err != nil {
		t.Fatalf("Settle: %v", err)
	}
	if got := remainingOf(t, mem, user); got != 700 {
		t.Errorf("user remaining after settling 300 of 1000 = %d, want 700", got)
	}
	if got := remainingOf(t, mem, prov); got != 9700 {
		t.Errorf("provider remaining = %d, want 9700", got)
	}
	if err := ledger.Settle(ctx, res.ID, 300); !errors.Is(err, ErrNoReservation) {
		t.Errorf("second Settle = %v, want ErrNoReservation", err)
	}

	// Debt: reserve 500, use 900: the bucket owes 200 and refuses 1 token
	// for exactly 201 s at 1 token/s.
	res, _ = reserve(500)
	if err := ledger.Settle(ctx, res.ID, 900); err != nil {
		t.Fatalf("Settle: %v", err)
	}
	u := user
	u.Hits = 1
	d, _ := mem.Decide(ctx, []store.Item{u})
	if d.Allowed || d.Results[0].RetryAfter != 201_000_000 {
		t.Errorf("after debt: allowed %v retry %d µs, want refused for 201 s", d.Allowed, d.Results[0].RetryAfter)
	}

	// A refused reservation charges nothing and opens nothing.
	clk.add(30 * time.Minute) // user bucket drained (debt included)
	res, dec = reserve(1001)
	if dec.Allowed || res.ID != "" || ledger.Open() != 0 {
		t.Errorf("Reserve(1001 of 1000) = %+v %v, open %d", res, dec.Allowed, ledger.Open())
	}

	// Expiry settles at the estimate: the tokens stay charged.
	res, _ = reserve(400)
	clk.add(2 * time.Minute)
	if n := ledger.Expire(); n != 1 {
		t.Errorf("Expire = %d, want 1", n)
	}
	if err := ledger.Settle(ctx, res.ID, 0); !errors.Is(err, ErrNoReservation) {
		t.Errorf("Settle after expiry = %v, want ErrNoReservation", err)
	}
	if got := remainingOf(t, mem, user); got != 1000-400+120 {
		t.Errorf("remaining after expiry = %d, want %d (the estimate stays charged, 120 s leaked)", got, 1000-400+120)
	}
}

// failingStore decides with the embedded store and fails every Adjust
// with err.
type failingStore struct {
	store.Store
	err error
}

func (f failingStore) Adjust(context.Context, []store.Adjustment) error { return f.err }

func TestReservationAfterFailedSettle(t *testing.T) {
	tests := []struct {
		name     string
		err      error
		wantOpen int
	}{
		{"store not reached: settle again later", fmt.Errorf("dial: %w", syscall.ECONNREFUSED), 1},
		{"timed out, may have run: closed at the estimate", context.DeadlineExceeded, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			ledger := NewReservations(failingStore{store.NewMemory(store.MemoryOptions{}), tt.err}, nil, nil)
			res, _, err := ledger.Reserve(ctx, []store.Item{bucket(t, "k", 100, 1, 10)}, time.Minute)
			if err != nil {
				t.Fatal(err)
			}
			if err := ledger.Settle(ctx, res.ID, 5); err == nil {
				t.Fatal("Settle with a failing store = nil, want an error")
			}
			if got := ledger.Open(); got != tt.wantOpen {
				t.Errorf("open after the failed settle = %d, want %d", got, tt.wantOpen)
			}
		})
	}
	ledger := NewReservations(store.NewMemory(store.MemoryOptions{}), nil, nil)
	if err := ledger.Settle(context.Background(), "x", -1); err == nil {
		t.Error("Settle(-1) = nil, want an error")
	}
}
