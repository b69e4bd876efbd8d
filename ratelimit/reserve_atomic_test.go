package ratelimit

import (
	"context"
	"errors"
	"strings"
	"syscall"
	"testing"
	"time"

	ratelimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/leakytokens/leaky/ratelimit/ledger"
	"github.com/leakytokens/leaky/ratelimit/store"
)

// faultyShared is a sharedStore with faults: OpenReservation fails (as a
// second round trip cancelled by Envoy's deadline would), the first
// TakeReservation loses its answer after it ran (a timeout after the
// script), and Adjust is refused (Redis down) when refuseAdjust is set.
type faultyShared struct {
	sharedStore
	loseTake     bool
	refuseAdjust bool
}

func (f *faultyShared) OpenReservation(context.Context, string, []byte, time.Duration) error {
	return context.DeadlineExceeded
}

func (f *faultyShared) TakeReservation(ctx context.Context, id, nonce string) ([]byte, bool, error) {
	rec, ok, err := f.sharedStore.TakeReservation(ctx, id, nonce)
	if f.loseTake {
		f.loseTake = false
		return nil, false, context.DeadlineExceeded
	}
	return rec, ok, err
}

func (f *faultyShared) Adjust(ctx context.Context, adj []store.Adjustment) error {
	if f.refuseAdjust {
		return syscall.ECONNREFUSED
	}
	return f.sharedStore.Adjust(ctx, adj)
}

// faultyReservations are Reservations on a faultyShared store, recording
// their settlements.
func faultyReservations() (*faultyShared, *Reservations, *recorder) {
	clk := &clock{us: 1_700_000_000_000_000}
	st := &faultyShared{sharedStore: newSharedStore(clk.micros)}
	rs := NewReservations(st, clk.time, nil)
	rec := &recorder{}
	rs.SetRecorder(rec.record)
	return st, rs, rec
}

// TestSharedReserveIsAtomic: with a shared store, an admitted reservation
// always has its record, however a separate open would fail; before the
// decision and the record were one store call, ReserveAs answered
// admitted with no id and the charge stood unrecorded.
func TestSharedReserveIsAtomic(t *testing.T) {
	ctx := context.Background()
	st, rs, rec := faultyReservations()
	it := bucket(t, "u", 1000, 1, 300)
	res, dec, err := rs.ReserveAs(ctx, "req-1", Owner{UserID: "u1"}, []store.Item{it}, nil, time.Minute)
	if err != nil || !dec.Allowed || res.ID != "req-1" {
		t.Fatalf("ReserveAs = %+v, %+v, %v; want admitted as req-1", res, dec, err)
	}
	if s, err := rs.Settle(ctx, "req-1", 100, ledger.KindMetered); err != nil || s.Actual != 100 {
		t.Fatalf("Settle = %+v, %v", s, err)
	}
	if got := remainingOf(t, st, it); got != 900 {
		t.Errorf("remaining = %d, want 900", got)
	}
	if sts := rec.all(); len(sts) != 1 || rs.Unrecorded() != 0 {
		t.Errorf("recorded %+v, unrecorded %d; want one settlement", sts, rs.Unrecorded())
	}
}

// TestSharedTakeRetried: a take that ran but whose answer was lost is
// retried under the same nonce and gets the record; before, the record
// was gone and the settlement never recorded.
func TestSharedTakeRetried(t *testing.T) {
	ctx := context.Background()
	st, rs, rec := faultyReservations()
	it := bucket(t, "u", 1000, 1, 300)
	if _, _, err := rs.ReserveAs(ctx, "req-1", Owner{}, []store.Item{it}, nil, time.Minute); err != nil {
		t.Fatal(err)
	}
	st.loseTake = true
	s, err := rs.Settle(ctx, "req-1", 100, ledger.KindMetered)
	if err != nil || s.Actual != 100 {
		t.Fatalf("Settle after a lost take = %+v, %v; want settled at 100", s, err)
	}
	if got := remainingOf(t, st, it); got != 900 {
		t.Errorf("remaining = %d, want 900", got)
	}
	if sts := rec.all(); len(sts) != 1 || sts[0].Kind != ledger.KindMetered {
		t.Errorf("recorded %+v, want req-1 metered", sts)
	}
}

// TestSharedReopenFails: the settlement's Adjust is refused and the
// record cannot be reopened either: the reservation exists nowhere, so it
// is recorded expired at its estimate (before, it stayed charged with
// nothing recorded).
func TestSharedReopenFails(t *testing.T) {
	ctx := context.Background()
	st, rs, rec := faultyReservations()
	it := bucket(t, "u", 1000, 1, 300)
	if _, _, err := rs.ReserveAs(ctx, "req-1", Owner{UserID: "u1"}, []store.Item{it}, nil, time.Minute); err != nil {
		t.Fatal(err)
	}
	st.refuseAdjust = true
	if _, err := rs.Settle(ctx, "req-1", 100, ledger.KindMetered); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("Settle with Redis down = %v, want ECONNREFUSED", err)
	}
	sts := rec.all()
	if len(sts) != 1 || sts[0].ID != "req-1" || sts[0].Kind != ledger.KindExpired || sts[0].Actual != 300 || sts[0].Owner.UserID != "u1" {
		t.Errorf("recorded %+v, want req-1 expired at its estimate 300", sts)
	}
	if got := remainingOf(t, st, it); got != 700 {
		t.Errorf("remaining = %d, want 700 (charged at the estimate)", got)
	}
}

// TestReservationIDTooLong: an id over store.MaxKeyLen is refused before
// anything is charged, on the map and on a shared store alike.
func TestReservationIDTooLong(t *testing.T) {
	ctx := context.Background()
	long := strings.Repeat("x", store.MaxKeyLen+1)
	for name, st := range map[string]store.Store{"memory": store.NewMemory(store.MemoryOptions{}), "shared": newSharedStore(nil)} {
		rs := NewReservations(st, nil, nil)
		it := bucket(t, "u", 1000, 1, 300)
		if _, _, err := rs.ReserveAs(ctx, long, Owner{}, []store.Item{it}, nil, time.Minute); !errors.Is(err, ErrReservationIDTooLong) {
			t.Errorf("%s: ReserveAs with a %d-byte id = %v, want ErrReservationIDTooLong", name, len(long), err)
		}
		if got := remainingOf(t, st, it); got != 1000 || rs.Open() != 0 {
			t.Errorf("%s: remaining %d, open %d; want 1000 and 0: nothing charged or kept", name, got, rs.Open())
		}
		if _, _, err := rs.ReserveAs(ctx, long[1:], Owner{}, []store.Item{it}, nil, time.Minute); err != nil {
			t.Errorf("%s: ReserveAs with a %d-byte id = %v", name, len(long)-1, err)
		}
	}
}

// TestLongRequestIDRefused: ShouldRateLimit answers a request_id over
// store.MaxKeyLen INVALID_ARGUMENT, charging nothing (before, it was
// charged and, on the map, kept).
func TestLongRequestIDRefused(t *testing.T) {
	s := start(t, testConfig(t, "memory", "policy.yaml"))
	_, err := s.client.ShouldRateLimit(context.Background(), &rlsv3.RateLimitRequest{Domain: "leaky-tokens",
		Descriptors: []*ratelimitv3.RateLimitDescriptor{withHits(desc(userDesc("lee")), 100),
			withHits(desc("request_id="+strings.Repeat("r", store.MaxKeyLen+1)), 100)}})
	if status.Code(err) != codes.InvalidArgument {
		t.Errorf("long request_id: %v, want InvalidArgument", err)
	}
	if got := remaining(t, s, userDesc("lee")); got != 1000 {
		t.Errorf("remaining = %d, want 1000 (nothing charged)", got)
	}
	if n := s.svc.Reservations().Open(); n != 0 {
		t.Errorf("open reservations = %d, want 0", n)
	}
}
