package storetest

import (
	"context"
	"errors"
	"time"

	"github.com/leakytokens/leaky/ratelimit/store"
)

// The fail-closed contract (store.WithFailClosed): a decision past its
// deadline charges nothing and wraps store.ErrLate; one within it charges
// as any other.
var lateCases = []struct {
	name string
	run  func(*env)
}{
	{"FailClosedPastDeadline", testFailClosedPastDeadline},
	{"FailClosedLiveDeadline", testFailClosedLiveDeadline},
}

// lateContext is a fail-closed context whose deadline passed a second ago.
func lateContext() (context.Context, context.CancelFunc) {
	return context.WithDeadline(store.WithFailClosed(context.Background()), time.Now().Add(-time.Second))
}

func testFailClosedPastDeadline(e *env) {
	ctx, cancel := lateContext()
	defer cancel()
	items := []store.Item{e.gcraItem("a", 5, second, 2), e.windowItem("w", 5, 10*second, 2)}
	if _, err := e.st.Decide(ctx, items); !errors.Is(err, store.ErrLate) {
		e.t.Errorf("Decide(fail-closed, deadline past) = %v, want an error wrapping ErrLate", err)
	}
	e.expect(store.Decision{Allowed: true, Results: []store.Result{ok(5, 0), ok(5, 10*second)}},
		e.gcraItem("a", 5, second, 0), e.windowItem("w", 5, 10*second, 0))
	if rv, isRv := e.st.(store.Reserver); isRv {
		if _, err := rv.DecideReserve(ctx, items, e.key("r"), []byte("rec"), time.Minute); !errors.Is(err, store.ErrLate) {
			e.t.Errorf("DecideReserve(fail-closed, deadline past) = %v, want an error wrapping ErrLate", err)
		}
		if _, ok, err := rv.TakeReservation(context.Background(), e.key("r"), "n"); err != nil || ok {
			e.t.Errorf("TakeReservation after a late DecideReserve = %v, %v; want no record", ok, err)
		}
		e.expect(store.Decision{Allowed: true, Results: []store.Result{ok(5, 0), ok(5, 10*second)}},
			e.gcraItem("a", 5, second, 0), e.windowItem("w", 5, 10*second, 0))
	}
}

func testFailClosedLiveDeadline(e *env) {
	ctx, cancel := context.WithTimeout(store.WithFailClosed(context.Background()), time.Minute)
	defer cancel()
	d, err := e.st.Decide(ctx, []store.Item{e.gcraItem("a", 5, second, 2)})
	if err != nil || !d.Allowed {
		e.t.Fatalf("Decide(fail-closed, deadline a minute away) = %+v, %v; want admitted", d, err)
	}
	e.expect(one(ok(3, 2*second)), e.gcraItem("a", 5, second, 0))
}
