package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"syscall"
	"testing"
	"time"

	"github.com/leakytokens/leaky/ratelimit/gcra"
	"github.com/leakytokens/leaky/ratelimit/ledger"
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
	rs := NewReservations(mem, clk.time, nil)
	user := bucket(t, "u", 1000, 1, 0)
	prov := bucket(t, "p", 10000, 1, 0)
	reserve := func(n int64) (Reservation, store.Decision) {
		t.Helper()
		u, p := user, prov
		u.Hits, p.Hits = n, n
		res, dec, err := rs.Reserve(ctx, []store.Item{u, p}, time.Minute)
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
	if _, err := rs.Settle(ctx, res.ID, 300, ledger.KindConsume); err != nil {
		t.Fatalf("Settle: %v", err)
	}
	if got := remainingOf(t, mem, user); got != 700 {
		t.Errorf("user remaining after settling 300 of 1000 = %d, want 700", got)
	}
	if got := remainingOf(t, mem, prov); got != 9700 {
		t.Errorf("provider remaining = %d, want 9700", got)
	}
	if _, err := rs.Settle(ctx, res.ID, 300, ledger.KindConsume); !errors.Is(err, ErrNoReservation) {
		t.Errorf("second Settle = %v, want ErrNoReservation", err)
	}

	// Debt: reserve 500, use 900: the bucket owes 200 and refuses 1 token
	// for exactly 201 s at 1 token/s.
	res, _ = reserve(500)
	if _, err := rs.Settle(ctx, res.ID, 900, ledger.KindConsume); err != nil {
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
	if dec.Allowed || res.ID != "" || rs.Open() != 0 {
		t.Errorf("Reserve(1001 of 1000) = %+v %v, open %d", res, dec.Allowed, rs.Open())
	}

	// Expiry settles at the estimate: the tokens stay charged.
	res, _ = reserve(400)
	clk.add(2 * time.Minute)
	if n := rs.Expire(ctx); n != 1 {
		t.Errorf("Expire = %d, want 1", n)
	}
	if _, err := rs.Settle(ctx, res.ID, 0, ledger.KindConsume); !errors.Is(err, ErrNoReservation) {
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
			rs := NewReservations(failingStore{store.NewMemory(store.MemoryOptions{}), tt.err}, nil, nil)
			res, _, err := rs.Reserve(ctx, []store.Item{bucket(t, "k", 100, 1, 10)}, time.Minute)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := rs.Settle(ctx, res.ID, 5, ledger.KindConsume); err == nil {
				t.Fatal("Settle with a failing store = nil, want an error")
			}
			if got := rs.Open(); got != tt.wantOpen {
				t.Errorf("open after the failed settle = %d, want %d", got, tt.wantOpen)
			}
		})
	}
	rs := NewReservations(store.NewMemory(store.MemoryOptions{}), nil, nil)
	if _, err := rs.Settle(context.Background(), "x", -1, ledger.KindConsume); err == nil {
		t.Error("Settle(-1) = nil, want an error")
	}
}

func TestReserveAsIDsAndRecorder(t *testing.T) {
	ctx := context.Background()
	clk := &clock{us: 1_700_000_000_000_000}
	mem := store.NewMemory(store.MemoryOptions{Now: clk.micros})
	rs := NewReservations(mem, clk.time, nil)
	var got []Settlement
	rs.SetRecorder(func(_ context.Context, st Settlement) { got = append(got, st) })
	owner := Owner{UserID: "u1", Provider: "openai", Tier: "free"}
	it := bucket(t, "u", 1000, 1, 100)

	res, _, err := rs.ReserveAs(ctx, "req-1", owner, []store.Item{it}, nil, time.Minute)
	if err != nil || res.ID != "req-1" {
		t.Fatalf("ReserveAs(req-1) = %v, %v, want id req-1", res, err)
	}
	if _, _, err := rs.ReserveAs(ctx, "req-1", owner, []store.Item{it}, nil, time.Minute); !errors.Is(err, ErrDuplicateReservation) {
		t.Fatalf("ReserveAs(req-1) again: err = %v, want ErrDuplicateReservation", err)
	}
	if r := remainingOf(t, mem, it); r != 900 {
		t.Errorf("remaining after a duplicate = %d, want 900 (the duplicate charged nothing)", r)
	}
	if _, err := rs.Settle(ctx, "req-1", 40, ledger.KindMetered); err != nil {
		t.Fatal(err)
	}
	res2, _, err := rs.ReserveAs(ctx, "req-2", owner, []store.Item{it}, nil, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	clk.add(2 * time.Second)
	if n := rs.Expire(ctx); n != 1 {
		t.Fatalf("Expire = %d, want 1", n)
	}
	want := []Settlement{
		{ID: "req-1", Kind: ledger.KindMetered, Owner: owner, Estimate: 100, Actual: 40, At: time.UnixMicro(1_700_000_000_000_000)},
		{ID: res2.ID, Kind: ledger.KindExpired, Owner: owner, Estimate: 100, Actual: 100, At: clk.time()},
	}
	if len(got) != len(want) {
		t.Fatalf("recorded %d settlements, want %d: %+v", len(got), len(want), got)
	}
	for i := range want {
		if got[i].ID != want[i].ID || got[i].Kind != want[i].Kind || got[i].Owner != want[i].Owner ||
			got[i].Estimate != want[i].Estimate || got[i].Actual != want[i].Actual || !got[i].At.Equal(want[i].At) {
			t.Errorf("settlement %d = %+v, want %+v", i, got[i], want[i])
		}
	}
}

func TestSettlementQuotaSplit(t *testing.T) {
	pool := ledger.Pool{Scope: "user", Subject: "u1", Provider: "openai"}
	win := time.Date(2026, 11, 29, 0, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name                    string
		estimate, fromP, actual int64
		wantW, wantP            int64
	}{
		{"exact", 100, 30, 100, 70, 30},
		{"debit goes to the window", 100, 30, 150, 120, 30},
		{"refund returns to the balance first", 100, 30, 80, 70, 10},
		{"refund beyond the balance's share", 100, 30, 50, 50, 0},
		{"all from the window", 100, 0, 40, 40, 0},
		{"nothing used", 100, 100, 0, 0, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := &reservation{
				items:   []store.Item{{Algorithm: store.Quota, Hits: tc.estimate}},
				results: []store.Result{{Allowed: true, FromPurchased: tc.fromP}},
				quotas:  []QuotaRef{{Item: 0, Pool: pool, Window: win}},
			}
			st := res.settlement("id", ledger.KindConsume, tc.actual, win)
			want := []ledger.QuotaCharge{{Pool: pool, Window: win, FromWindow: tc.wantW, FromPurchased: tc.wantP}}
			if fmt.Sprint(st.Quotas) != fmt.Sprint(want) {
				t.Errorf("settlement(%d of %d, %d purchased).Quotas = %v, want %v", tc.actual, tc.estimate, tc.fromP, st.Quotas, want)
			}
			if st.Quotas[0].FromWindow+st.Quotas[0].FromPurchased != tc.actual {
				t.Errorf("window + purchased = %d, want the actual %d", st.Quotas[0].FromWindow+st.Quotas[0].FromPurchased, tc.actual)
			}
		})
	}
}
