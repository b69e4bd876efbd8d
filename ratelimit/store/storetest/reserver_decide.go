package storetest

import (
	"context"
	"errors"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/leakytokens/leaky/ratelimit/store"
)

// decideReserve calls DecideReserve and fails the test on an error.
func (e *rsvEnv) decideReserve(id, rec string, items ...store.Item) store.Decision {
	e.t.Helper()
	dec, err := e.rv.DecideReserve(context.Background(), items, id, []byte(rec), time.Minute)
	if err != nil {
		e.t.Fatalf("DecideReserve(%s): %v", id, err)
	}
	return dec
}

// testDecideReserve: a decision and its record are one step. Admitted:
// charged and recorded, with the results; refused: neither; an id held:
// ErrReservationExists, charging nothing.
func testDecideReserve(e *rsvEnv) {
	ctx := context.Background()
	hour := time.Hour.Microseconds()
	win := func(hits int64) store.Item {
		return store.Item{Key: e.ns + "win", Algorithm: store.FixedWindow, Limit: 10, Period: hour, Hits: hits}
	}
	other := func(hits int64) store.Item {
		return store.Item{Key: e.ns + "other", Algorithm: store.FixedWindow, Limit: 100, Period: hour, Hits: hits}
	}
	quota := store.Item{Key: e.ns + "quota", Algorithm: store.Quota, Limit: 50, Period: hour, Hits: 5}

	if d := e.decideReserve(e.id(1), "r1", win(6), quota); !d.Allowed || d.Results[0].Remaining != 4 {
		e.t.Fatalf("DecideReserve(id 1) = %+v, want admitted with 4 left", d)
	}
	_, err := e.rv.DecideReserve(ctx, []store.Item{win(4)}, e.id(1), []byte("again"), time.Minute)
	if !errors.Is(err, store.ErrReservationExists) {
		e.t.Fatalf("DecideReserve of a held id = %v, want ErrReservationExists", err)
	}
	// A held id is that, not a refusal, even when its items would not fit.
	_, err = e.rv.DecideReserve(ctx, []store.Item{win(5), other(1)}, e.id(1), []byte("again"), time.Minute)
	if !errors.Is(err, store.ErrReservationExists) {
		e.t.Fatalf("DecideReserve of a held id over a full window = %v, want ErrReservationExists", err)
	}
	// The duplicate charged nothing: 6 + 4 fit the window of 10.
	if d := e.decideReserve(e.id(2), "r2", win(4), other(1)); !d.Allowed {
		e.t.Fatalf("DecideReserve(id 2) after the duplicate = %+v, want admitted (the duplicate charged nothing)", d)
	}
	// Refused (the window is full): no record, and other not charged.
	if d := e.decideReserve(e.id(3), "r3", other(1), win(1)); d.Allowed {
		e.t.Fatalf("DecideReserve(id 3) on a full window = %+v, want refused", d)
	}
	if rec, ok := e.take(e.rv, e.id(3)); ok {
		e.t.Errorf("a refused DecideReserve stored %q", rec)
	}
	if d := e.decideReserve(e.id(4), "r4", other(99)); !d.Allowed {
		e.t.Errorf("DecideReserve(id 4) = %+v, want admitted (the refusal charged nothing)", d)
	}
	// No items: admitted, recorded.
	if d := e.decideReserve(e.id(5), "r5"); !d.Allowed || len(d.Results) != 0 {
		e.t.Errorf("DecideReserve with no items = %+v, want admitted", d)
	}
	for _, w := range []struct {
		id   int
		want string
	}{{1, "r1\n0,0"}, {2, "r2\n0,0"}, {4, "r4\n0"}, {5, "r5\n"}} {
		if rec, ok := e.take(e.rv, e.id(w.id)); !ok || rec != w.want {
			e.t.Errorf("TakeReservation(id %d) = %q, %v; want %q", w.id, rec, ok, w.want)
		}
	}
	// Too large a record with its results, or a bad id: nothing decided.
	for _, tc := range []struct {
		id  string
		rec []byte
	}{{e.id(6), make([]byte, store.MaxReservationRecord-10)}, {"", []byte("r")}} {
		if _, err := e.rv.DecideReserve(ctx, []store.Item{other(1)}, tc.id, tc.rec, time.Minute); !errors.Is(err, store.ErrInvalidReservation) {
			e.t.Errorf("DecideReserve(%q, %d bytes) = %v, want ErrInvalidReservation", tc.id, len(tc.rec), err)
		}
	}
	// Expired: claimed with its results, as an opened one is.
	if _, err := e.rv.DecideReserve(ctx, []store.Item{win(0)}, e.id(7), []byte("r7"), time.Second); err != nil {
		e.t.Fatal(err)
	}
	e.clock.Advance(time.Second.Microseconds())
	want := []store.ReservationRecord{{ID: e.id(7), Rec: []byte("r7\n0")}}
	if diff := cmp.Diff(want, e.claim(e.rv, 10)); diff != "" {
		e.t.Errorf("ClaimExpired (-want +got):\n%s", diff)
	}
}

// testTakeLease: a take retried with its nonce gets the record again;
// another nonce gets nothing, and a leased record is never claimed.
func testTakeLease(e *rsvEnv) {
	ctx := context.Background()
	e.openRec(e.id(1), "leased", time.Second)
	for i, nonce := range []string{"a", "a", "b", "a"} {
		rec, ok, err := e.rv.TakeReservation(ctx, e.id(1), nonce)
		want := nonce == "a"
		if err != nil || ok != want || (ok && string(rec) != "leased") {
			e.t.Errorf("take %d with nonce %s = %q, %v, %v; want a record: %v", i, nonce, rec, ok, err, want)
		}
	}
	e.clock.Advance(time.Second.Microseconds())
	if recs := e.claim(e.rv, 10); len(recs) != 0 {
		e.t.Errorf("ClaimExpired of a taken record = %v, want none", recs)
	}
	if _, _, err := e.rv.TakeReservation(ctx, e.id(1), ""); !errors.Is(err, store.ErrInvalidReservation) {
		e.t.Errorf("TakeReservation with no nonce = %v, want ErrInvalidReservation", err)
	}
}
