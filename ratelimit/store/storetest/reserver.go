package storetest

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/leakytokens/leaky/ratelimit/store"
)

// ReserverOpener returns a store.Reserver that reads the time from now.
// RunReserver calls it once per case, and twice in the case that models
// two instances: every Reserver it returns within one test t must share
// its records (the same backend and key prefix).
type ReserverOpener func(t *testing.T, now func() int64) store.Reserver

// RunReserver runs the store.Reserver contract against the Reservers open
// returns. Each case has its own clock and its own ids.
func RunReserver(t *testing.T, open ReserverOpener) {
	cases := []struct {
		name string
		run  func(*rsvEnv)
	}{
		{"OpenTakeOnce", testOpenTakeOnce},
		{"InvalidReservations", testInvalidReservations},
		{"TakeAfterExpiry", testTakeAfterExpiry},
		{"ConcurrentTakes", testConcurrentTakes},
		{"TwoScanners", testTwoScanners},
		{"DecideReserve", testDecideReserve},
		{"TakeLease", testTakeLease},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := &rsvEnv{t: t, clock: &Clock{}, open: open, ns: "storetest:" + c.name + ":"}
			e.clock.Set(Start)
			e.rv = open(t, e.clock.Now)
			c.run(e)
		})
	}
}

type rsvEnv struct {
	t     *testing.T
	clock *Clock
	open  ReserverOpener
	rv    store.Reserver
	ns    string
	takes int // nonces used by take
}

func (e *rsvEnv) id(n int) string { return fmt.Sprintf("%sid-%d", e.ns, n) }

func (e *rsvEnv) openRec(id, rec string, ttl time.Duration) {
	e.t.Helper()
	if err := e.rv.OpenReservation(context.Background(), id, []byte(rec), ttl); err != nil {
		e.t.Fatalf("OpenReservation(%s): %v", id, err)
	}
}

// take takes id under a fresh nonce and returns its record, "" when there
// is none.
func (e *rsvEnv) take(rv store.Reserver, id string) (string, bool) {
	e.t.Helper()
	e.takes++
	rec, ok, err := rv.TakeReservation(context.Background(), id, fmt.Sprint("take-", e.takes))
	if err != nil {
		e.t.Fatalf("TakeReservation(%s): %v", id, err)
	}
	return string(rec), ok
}

func (e *rsvEnv) claim(rv store.Reserver, limit int) []store.ReservationRecord {
	e.t.Helper()
	recs, err := rv.ClaimExpired(context.Background(), limit)
	if err != nil {
		e.t.Fatalf("ClaimExpired: %v", err)
	}
	return recs
}

func testOpenTakeOnce(e *rsvEnv) {
	ctx := context.Background()
	id := e.id(1)
	e.openRec(id, "record one", time.Minute)
	if err := e.rv.OpenReservation(ctx, id, []byte("other"), time.Minute); !errors.Is(err, store.ErrReservationExists) {
		e.t.Fatalf("second OpenReservation = %v, want ErrReservationExists", err)
	}
	if rec, ok := e.take(e.rv, id); !ok || rec != "record one" {
		e.t.Fatalf("TakeReservation = %q, %v; want the first record", rec, ok)
	}
	if rec, ok := e.take(e.rv, id); ok {
		e.t.Fatalf("second TakeReservation = %q, want none", rec)
	}
	if rec, ok := e.take(e.rv, e.id(2)); ok {
		e.t.Fatalf("TakeReservation of an id never opened = %q, want none", rec)
	}
	// A taken id is free again; binary records survive.
	bin := string([]byte{0, 1, 0xff, '\n', 0})
	e.openRec(id, bin, time.Minute)
	if rec, ok := e.take(e.rv, id); !ok || rec != bin {
		e.t.Fatalf("TakeReservation of a reopened id = %q, %v; want %q", rec, ok, bin)
	}
	e.clock.Advance(2 * time.Minute.Microseconds())
	if recs := e.claim(e.rv, 10); len(recs) != 0 {
		e.t.Errorf("ClaimExpired after every record was taken = %v, want none", recs)
	}
}

func testInvalidReservations(e *rsvEnv) {
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		id   string
		rec  []byte
		ttl  time.Duration
	}{
		{"empty id", "", []byte("r"), time.Minute},
		{"oversize id", strings.Repeat("i", store.MaxKeyLen+1), []byte("r"), time.Minute},
		{"oversize record", e.id(1), make([]byte, store.MaxReservationRecord+1), time.Minute},
		{"no ttl", e.id(2), []byte("r"), 0},
	} {
		if err := e.rv.OpenReservation(ctx, tc.id, tc.rec, tc.ttl); !errors.Is(err, store.ErrInvalidReservation) {
			e.t.Errorf("%s: OpenReservation = %v, want ErrInvalidReservation", tc.name, err)
		}
	}
	if _, ok := e.take(e.rv, e.id(1)); ok {
		e.t.Error("a refused record was stored")
	}
	e.openRec(e.id(3), string(make([]byte, store.MaxReservationRecord)), time.Minute)
}

func testTakeAfterExpiry(e *rsvEnv) {
	ctx := context.Background()
	e.openRec(e.id(1), "short", time.Second)
	e.openRec(e.id(2), "long", time.Hour)
	if recs := e.claim(e.rv, 10); len(recs) != 0 {
		e.t.Fatalf("ClaimExpired before any expiry = %v, want none", recs)
	}
	e.clock.Advance(time.Second.Microseconds())
	if rec, ok := e.take(e.rv, e.id(1)); ok {
		e.t.Fatalf("TakeReservation at the expiry = %q, want none", rec)
	}
	if err := e.rv.OpenReservation(ctx, e.id(1), []byte("again"), time.Minute); !errors.Is(err, store.ErrReservationExists) {
		e.t.Errorf("OpenReservation of an expired, unclaimed id = %v, want ErrReservationExists", err)
	}
	want := []store.ReservationRecord{{ID: e.id(1), Rec: []byte("short")}}
	if diff := cmp.Diff(want, e.claim(e.rv, 10)); diff != "" {
		e.t.Errorf("ClaimExpired (-want +got):\n%s", diff)
	}
	if recs := e.claim(e.rv, 10); len(recs) != 0 {
		e.t.Errorf("second ClaimExpired = %v, want none", recs)
	}
	if rec, ok := e.take(e.rv, e.id(2)); !ok || rec != "long" {
		e.t.Errorf("TakeReservation of the open one = %q, %v", rec, ok)
	}
}

func testConcurrentTakes(e *rsvEnv) {
	const ids, takers = 8, 16
	for i := range ids {
		e.openRec(e.id(i), fmt.Sprint("rec-", i), time.Minute)
	}
	var mu sync.Mutex
	got := map[string]int{}
	var wg sync.WaitGroup
	for taker := range takers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range ids {
				rec, ok, err := e.rv.TakeReservation(context.Background(), e.id(i), fmt.Sprint("taker-", taker))
				if err != nil {
					e.t.Errorf("TakeReservation: %v", err)
					return
				}
				if ok {
					mu.Lock()
					got[string(rec)]++
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	for i := range ids {
		if n := got[fmt.Sprint("rec-", i)]; n != 1 {
			e.t.Errorf("record %d taken %d times by %d concurrent takers, want once", i, n, takers)
		}
	}
}

// testTwoScanners: two instances scan the same expired records
// concurrently, in small batches; each record is claimed exactly once.
func testTwoScanners(e *rsvEnv) {
	const n = 40
	for i := range n {
		e.openRec(e.id(i), fmt.Sprint("rec-", i), time.Second)
	}
	e.openRec(e.id(n), "open", time.Hour)
	e.clock.Advance(time.Second.Microseconds())
	other := e.open(e.t, e.clock.Now)
	var mu sync.Mutex
	var claimed []string
	var wg sync.WaitGroup
	for _, rv := range []store.Reserver{e.rv, other, e.rv, other} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				recs, err := rv.ClaimExpired(context.Background(), 3)
				if err != nil {
					e.t.Errorf("ClaimExpired: %v", err)
					return
				}
				if len(recs) == 0 {
					return
				}
				mu.Lock()
				for _, r := range recs {
					claimed = append(claimed, r.ID+"="+string(r.Rec))
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	var want []string
	for i := range n {
		want = append(want, fmt.Sprintf("%s=rec-%d", e.id(i), i))
	}
	sort.Strings(want)
	sort.Strings(claimed)
	if diff := cmp.Diff(want, claimed); diff != "" {
		e.t.Errorf("claimed by two scanners (-want +got):\n%s", diff)
	}
	if rec, ok := e.take(other, e.id(n)); !ok || rec != "open" {
		e.t.Errorf("the open record, taken on the other instance = %q, %v", rec, ok)
	}
}
