package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/leakytokens/leaky/internal/contract"
	"github.com/leakytokens/leaky/ratelimit/ledger"
	"github.com/leakytokens/leaky/ratelimit/store"
)

// sharedStore is a store that keeps reservation records, in process: two
// Reservations over one sharedStore are two instances over one Redis.
type sharedStore struct {
	*store.Memory
	*store.MemoryReserver
}

// newSharedStore is a sharedStore on the clock now (nil: the system's).
func newSharedStore(now func() int64) sharedStore {
	m := store.NewMemory(store.MemoryOptions{Now: now})
	return sharedStore{m, store.NewMemoryReserver(now, m)}
}

// recorder counts the settlements handed to it.
type recorder struct {
	mu  sync.Mutex
	sts []Settlement
}

func (r *recorder) record(_ context.Context, st Settlement) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.sts = append(r.sts, st)
}

func (r *recorder) all() []Settlement {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Settlement(nil), r.sts...)
}

func TestSharedReservationsAcrossInstances(t *testing.T) {
	ctx := context.Background()
	clk := &clock{us: 1_700_000_000_000_000}
	st := newSharedStore(clk.micros)
	a, b := NewReservations(st, clk.time, nil), NewReservations(st, clk.time, nil)
	var recA, recB recorder
	a.SetRecorder(recA.record)
	b.SetRecorder(recB.record)
	owner := Owner{UserID: "u1", Provider: "openai", Tier: "free"}
	it := bucket(t, "u", 1000, 1, 300)

	// Reserved on A, settled on B: the refund applies, B records it, and
	// neither settles it again.
	if _, _, err := a.ReserveAs(ctx, "req-1", owner, []store.Item{it}, nil, time.Minute); err != nil {
		t.Fatal(err)
	}
	if got := remainingOf(t, st, it); got != 700 {
		t.Fatalf("remaining while reserved = %d, want 700", got)
	}
	s, err := b.Settle(ctx, "req-1", 40, ledger.KindMetered)
	if err != nil || s.Actual != 40 || s.Estimate != 300 || s.Owner != owner {
		t.Fatalf("Settle on B = %+v, %v", s, err)
	}
	if got := remainingOf(t, st, it); got != 960 {
		t.Errorf("remaining after settling at 40 = %d, want 960", got)
	}
	for name, r := range map[string]*Reservations{"A": a, "B": b} {
		if _, err := r.Settle(ctx, "req-1", 40, ledger.KindMetered); !errors.Is(err, ErrNoReservation) {
			t.Errorf("second Settle on %s = %v, want ErrNoReservation", name, err)
		}
	}

	// An id A holds is a duplicate on B, which charges nothing.
	if _, _, err := a.ReserveAs(ctx, "req-2", owner, []store.Item{it}, nil, time.Second); err != nil {
		t.Fatal(err)
	}
	if _, _, err := b.ReserveAs(ctx, "req-2", owner, []store.Item{it}, nil, time.Minute); !errors.Is(err, ErrDuplicateReservation) {
		t.Fatalf("ReserveAs(req-2) on B = %v, want ErrDuplicateReservation", err)
	}
	if got := remainingOf(t, st, it); got != 660 {
		t.Errorf("remaining after the duplicate = %d, want 660 (nothing charged)", got)
	}

	// Expired: recorded once, by whichever instance claims it.
	clk.add(2 * time.Second)
	if n := a.Expire(ctx) + b.Expire(ctx) + a.Expire(ctx); n != 1 {
		t.Errorf("Expire on A, B, A = %d in all, want 1", n)
	}
	if _, err := b.Settle(ctx, "req-2", 1, ledger.KindMetered); !errors.Is(err, ErrNoReservation) {
		t.Errorf("Settle after expiry = %v, want ErrNoReservation", err)
	}
	sts := append(recA.all(), recB.all()...)
	if len(sts) != 2 || sts[0].ID != "req-2" || sts[0].Kind != ledger.KindExpired || sts[0].Actual != 300 || sts[1].ID != "req-1" {
		t.Errorf("recorded %+v, want req-2 expired at 300 (A) and req-1 metered (B)", sts)
	}
	if a.Unrecorded()+b.Unrecorded() != 0 {
		t.Errorf("unrecorded = %d, %d, want 0", a.Unrecorded(), b.Unrecorded())
	}
}

func TestSharedReservationTooLarge(t *testing.T) {
	st := newSharedStore(nil)
	rs := NewReservations(st, nil, nil)
	var items []store.Item
	for i := range 20 {
		it := bucket(t, fmt.Sprintf("%0500d", i), 1000, 1, 10)
		items = append(items, it)
	}
	if _, _, err := rs.ReserveAs(context.Background(), "big", Owner{}, items, nil, time.Minute); !errors.Is(err, ErrReservationTooLarge) {
		t.Fatalf("ReserveAs with a 10 KB record = %v, want ErrReservationTooLarge", err)
	}
	if got := remainingOf(t, st, items[0]); got != 1000 {
		t.Errorf("remaining = %d, want 1000: nothing charged", got)
	}
}

// TestMeteringAcrossTwoInstances: two services on one Redis, as replicas
// behind one cluster. ShouldRateLimit reaches A and the ext_proc stream of
// the same request reaches B, which settles A's reservation at the usage;
// an expired reservation is recorded by one of the two.
func TestMeteringAcrossTwoInstances(t *testing.T) {
	cfgA := testConfig(t, "redis", "policy.yaml")
	cfgB := cfgA
	cfgB.GRPCAddr, cfgB.HTTPAddr = "127.0.0.1:0", "127.0.0.1:0"
	a, b := start(t, cfgA), start(t, cfgB)
	var recA, recB recorder
	a.svc.Reservations().SetRecorder(recA.record)
	b.svc.Reservations().SetRecorder(recB.record)

	reserveAs(t, a, "req-x", 300, userDesc("kim"))
	if got := remaining(t, b, userDesc("kim")); got != 700 {
		t.Fatalf("remaining on B after A's reservation = %d, want 700", got)
	}
	e := openExchange(t, context.Background(), meterClient(t, b))
	e.send(reqHeaders(headers(false, ":method", "POST", ":path", chatPath, "x-request-id", "req-x",
		"x-leaky-provider", "openai", "x-leaky-estimate", "300", "content-length", fmt.Sprint(len(chatBody)))))
	e.send(reqBody(chatBody))
	e.send(respHeaders(headers(false, ":status", "200", "content-type", "application/json")))
	e.streamResponse(`{"choices":[{"message":{"content":"Hi"}}],"usage":{"prompt_tokens":9,"completion_tokens":3,"total_tokens":12}}`, 50)
	e.close()
	if got := remaining(t, a, userDesc("kim")); got != 988 {
		t.Errorf("remaining after B settled at 12 = %d, want 988", got)
	}
	if ra, rb := recA.all(), recB.all(); len(ra) != 0 || len(rb) != 1 || rb[0].ID != "req-x" || rb[0].Kind != ledger.KindMetered || rb[0].Actual != 12 {
		t.Errorf("recorded on A %+v, on B %+v; want req-x metered at 12 once, on B", ra, rb)
	}

	// Expiry: both instances scan every second; one records it.
	res, err := a.svc.ReserveAs(context.Background(), "req-y", contract.Request{Provider: "openai", Tier: "free", User: "kim", Estimate: 50}, time.Second)
	if err != nil || !res.Allowed {
		t.Fatalf("ReserveAs(req-y) = %+v, %v", res, err)
	}
	expired := func() int {
		n := 0
		for _, st := range append(recA.all(), recB.all()...) {
			if st.ID == "req-y" && st.Kind == ledger.KindExpired && st.Actual == 50 {
				n++
			}
		}
		return n
	}
	eventually(t, "req-y recorded expired", func() bool { return expired() > 0 })
	more := a.svc.Reservations().Expire(context.Background()) + b.svc.Reservations().Expire(context.Background())
	if n := expired(); n != 1 || more != 0 {
		t.Errorf("req-y recorded expired %d times (and %d more scans found it), want once", n, more)
	}
}
