// Package storetest is the contract every store.Store implementation passes:
// the in-process store.Memory and the backends (redisstore, …) run the same
// cases, so they decide identically.
package storetest

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/leakytokens/leaky/ratelimit/gcra"
	"github.com/leakytokens/leaky/ratelimit/store"
)

// Start is the time, in µs since the epoch, at which every case's clock
// starts: a realistic epoch, so backends that compute in doubles are tested
// with 16-digit times.
const Start int64 = 1_700_000_000_000_000

// Clock is a controllable time source in µs since the epoch, safe for
// concurrent use.
type Clock struct{ us atomic.Int64 }

// Now returns the clock's time.
func (c *Clock) Now() int64 { return c.us.Load() }

// Advance moves the clock forward by d µs.
func (c *Clock) Advance(d int64) { c.us.Add(d) }

// Set moves the clock to us.
func (c *Clock) Set(us int64) { c.us.Store(us) }

// Opener returns a store that reads the time from now. The suite calls it
// once per case, and twice in the cases that model two service instances;
// every store it returns within one test t must share bucket state (the
// same backend and key prefix). An in-process store may return the same
// instance for the same t.
//
// The suite advances now itself. A backend may still expire state in real
// time once a bucket's span has passed (the Redis store sets TTLs from the
// time it is given), so wherever state must survive the suite keeps spans
// of a second or more.
type Opener func(t *testing.T, now func() int64) store.Store

// Run runs every case of the contract against the stores open returns.
// Each case uses its own clock and its own key namespace.
func Run(t *testing.T, open Opener) {
	cases := []struct {
		name string
		run  func(*env)
	}{
		{"BurstThenRefuse", testBurstThenRefuse},
		{"LeakOverTime", testLeakOverTime},
		{"AllOrNothing", testAllOrNothing},
		{"CheckOnly", testCheckOnly},
		{"Never", testNever},
		{"Shadow", testShadow},
		{"FixedWindowBoundary", testFixedWindowBoundary},
		{"AdjustGCRA", testAdjustGCRA},
		{"AdjustFixedWindow", testAdjustFixedWindow},
		{"AdjustNamedWindow", testAdjustNamedWindow},
		{"DuplicateKeys", testDuplicateKeys},
		{"AlgorithmsDoNotShareAKey", testAlgorithmsDoNotShareAKey},
		{"EmptyDecision", testEmptyDecision},
		{"InvalidItems", testInvalidItems},
		{"CanceledContext", testCanceledContext},
		{"ExactUnderContention", testExactUnderContention},
		{"ExactAcrossTwoInstances", testExactAcrossTwoInstances},
	}
	cases = append(cases, quotaCases...)
	cases = append(cases, creditCases...)
	cases = append(cases, lateCases...)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := &env{t: t, clock: &Clock{}, open: open, ns: "storetest:" + c.name + ":"}
			e.clock.Set(Start)
			e.st = open(t, e.clock.Now)
			c.run(e)
		})
	}
}

// env is one case's store, clock and key namespace.
type env struct {
	t     *testing.T
	clock *Clock
	open  Opener
	st    store.Store
	ns    string
}

func (e *env) key(name string) string { return e.ns + name }

// gcraItem is a GCRA item on key in e's namespace.
func (e *env) gcraItem(key string, burst, interval, hits int64) store.Item {
	return store.Item{Key: e.key(key), Algorithm: store.GCRA, Limit: burst, Period: interval, Hits: hits}
}

// windowItem is a FixedWindow item on key in e's namespace.
func (e *env) windowItem(key string, limit, period, hits int64) store.Item {
	return store.Item{Key: e.key(key), Algorithm: store.FixedWindow, Limit: limit, Period: period, Hits: hits}
}

func (e *env) decide(items ...store.Item) store.Decision {
	e.t.Helper()
	d, err := e.st.Decide(context.Background(), items)
	if err != nil {
		e.t.Fatalf("Decide(%s): %v", describe(items), err)
	}
	return d
}

// expect decides items and compares the decision with want.
func (e *env) expect(want store.Decision, items ...store.Item) {
	e.t.Helper()
	got := e.decide(items...)
	if diff := cmp.Diff(want, got); diff != "" {
		e.t.Errorf("at +%d µs Decide(%s) (-want +got):\n%s", e.clock.Now()-Start, describe(items), diff)
	}
}

func (e *env) adjust(adj ...store.Adjustment) {
	e.t.Helper()
	if err := e.st.Adjust(context.Background(), adj); err != nil {
		e.t.Fatalf("Adjust: %v", err)
	}
}

// describe names items in failure messages without the namespace.
func describe(items []store.Item) string {
	parts := make([]string, len(items))
	for i, it := range items {
		alg := "gcra"
		if it.Algorithm == store.FixedWindow {
			alg = "window"
		}
		key := it.Key
		if i := strings.LastIndexByte(key, ':'); i >= 0 {
			key = key[i+1:]
		}
		parts[i] = fmt.Sprintf("%s %s limit %d period %d hits %d shadow %v", alg, key, it.Limit, it.Period, it.Hits, it.Shadow)
	}
	return "[" + strings.Join(parts, "; ") + "]"
}

// one is the decision of a single item.
func one(r store.Result) store.Decision {
	return store.Decision{Allowed: r.Allowed, Results: []store.Result{r}}
}

// ok is an allowed result.
func ok(remaining, resetAfter int64) store.Result {
	return store.Result{Allowed: true, Remaining: remaining, ResetAfter: resetAfter}
}

// no is a refused result.
func no(remaining, retryAfter, resetAfter int64) store.Result {
	return store.Result{Remaining: remaining, RetryAfter: retryAfter, ResetAfter: resetAfter}
}

const second = 1_000_000 // µs

func testBurstThenRefuse(e *env) {
	for i := int64(1); i <= 5; i++ {
		e.expect(one(ok(5-i, i*second)), e.gcraItem("a", 5, second, 1))
	}
	e.expect(one(no(0, second, 5*second)), e.gcraItem("a", 5, second, 1))
	e.expect(one(no(0, second, 5*second)), e.gcraItem("a", 5, second, 1))
}

func testLeakOverTime(e *env) {
	it := e.gcraItem("a", 4, second, 1)
	for range 4 {
		e.decide(it)
	}
	e.expect(one(no(0, second, 4*second)), it)
	e.clock.Advance(second)
	e.expect(one(ok(0, 4*second)), it)
	e.expect(one(no(0, second, 4*second)), it)
	e.clock.Advance(2*second + second/2)
	e.expect(one(ok(1, 2*second+second/2)), it)
	e.expect(one(ok(0, 3*second+second/2)), it)
	e.expect(one(no(0, second/2, 3*second+second/2)), it)
	e.clock.Advance(100 * second)
	e.expect(one(ok(0, 4*second)), e.gcraItem("a", 4, second, 4))
}

func testAllOrNothing(e *env) {
	a := e.gcraItem("a", 10, second, 3)
	b := e.gcraItem("b", 2, second, 2)
	c := e.windowItem("c", 10, 3600*second, 1)
	first := e.decide(a, b, c)
	if !first.Allowed {
		e.t.Fatalf("first decision refused: %+v", first)
	}
	// b is now full: the whole request is refused and a and c keep what
	// they had, which their results report.
	_, end := windowOf(e.clock.Now(), 3600*second)
	reset := end - e.clock.Now()
	e.expect(store.Decision{Results: []store.Result{
		ok(7, 3*second),
		no(0, second, 2*second),
		ok(9, reset),
	}}, a, e.gcraItem("b", 2, second, 1), c)
	e.expect(store.Decision{Allowed: true, Results: []store.Result{
		ok(7, 3*second), ok(9, reset),
	}}, e.gcraItem("a", 10, second, 0), e.windowItem("c", 10, 3600*second, 0))
}

func testCheckOnly(e *env) {
	e.expect(one(ok(5, 0)), e.gcraItem("a", 5, second, 0))
	// A check creates nothing: the full burst is still there.
	e.expect(one(ok(0, 5*second)), e.gcraItem("a", 5, second, 5))
	e.expect(one(ok(0, 5*second)), e.gcraItem("a", 5, second, 0))
	e.expect(one(no(0, second, 5*second)), e.gcraItem("a", 5, second, 1))

	_, end := windowOf(e.clock.Now(), 60*second)
	reset := end - e.clock.Now()
	e.expect(one(ok(3, reset)), e.windowItem("w", 3, 60*second, 0))
	e.expect(one(ok(0, reset)), e.windowItem("w", 3, 60*second, 3))
	e.expect(one(ok(0, reset)), e.windowItem("w", 3, 60*second, 0))
}

func testNever(e *env) {
	e.expect(one(no(5, -1, 0)), e.gcraItem("a", 5, second, 6))
	e.expect(one(ok(5, 0)), e.gcraItem("a", 5, second, 0))
	_, end := windowOf(e.clock.Now(), 60*second)
	reset := end - e.clock.Now()
	e.expect(one(no(3, -1, reset)), e.windowItem("w", 3, 60*second, 4))
	e.expect(one(ok(3, reset)), e.windowItem("w", 3, 60*second, 0))
	// A never-fitting item refuses the whole request.
	e.expect(store.Decision{Results: []store.Result{ok(5, 0), no(3, -1, reset)}},
		e.gcraItem("a", 5, second, 1), e.windowItem("w", 3, 60*second, 4))
}

func testShadow(e *env) {
	full := e.gcraItem("s", 1, second, 1)
	e.decide(full)
	shadow := full
	shadow.Shadow = true
	a := e.gcraItem("a", 5, second, 2)
	// The refusing shadow item is reported but lets the request through,
	// and the other item is charged.
	e.expect(store.Decision{Allowed: true, Results: []store.Result{
		no(0, second, second), ok(3, 2*second),
	}}, shadow, a)
	// An allowed shadow item is charged like any other.
	sa := e.gcraItem("sa", 5, second, 2)
	sa.Shadow = true
	e.expect(one(ok(3, 2*second)), sa)
	e.expect(one(ok(3, 2*second)), e.gcraItem("sa", 5, second, 0))
	// A never-fitting shadow item does not refuse either.
	sn := e.gcraItem("sn", 5, second, 9)
	sn.Shadow = true
	e.expect(store.Decision{Allowed: true, Results: []store.Result{no(5, -1, 0)}}, sn)
}

func testFixedWindowBoundary(e *env) {
	const period = 60 * second
	start, end := windowOf(e.clock.Now(), period)
	e.clock.Set(end - 1)
	it := e.windowItem("w", 3, period, 1)
	for i := int64(1); i <= 3; i++ {
		e.expect(one(ok(3-i, 1)), it)
	}
	e.expect(one(no(0, 1, 1)), it)
	// The count resets exactly at the boundary.
	e.clock.Set(end)
	e.expect(one(ok(2, period)), it)
	e.clock.Set(end + period - 1)
	e.expect(one(ok(1, 1)), it)
	e.expect(one(ok(0, 1)), it)
	e.expect(one(no(0, 1, 1)), it)
	// Far later, a fresh window.
	e.clock.Set(start + 10*period + period/2)
	e.expect(one(ok(0, period/2)), e.windowItem("w", 3, period, 3))
}

func testAdjustGCRA(e *env) {
	const iv = second // spans of seconds, so real-time TTLs outlast the case
	a := func(delta int64) store.Adjustment {
		return store.Adjustment{Item: e.gcraItem("a", 10, iv, 0), Delta: delta}
	}
	check := e.gcraItem("a", 10, iv, 0)
	e.decide(e.gcraItem("a", 10, iv, 5))
	e.adjust(a(-3))
	e.expect(one(ok(8, 2*iv)), check)
	// A refund never takes the bucket below empty.
	e.adjust(a(-100))
	e.expect(one(ok(10, 0)), check)
	// A debit beyond the capacity is debt: 15 tokens is 5 intervals past
	// full, so one more token waits exactly 6 intervals.
	e.adjust(a(15))
	e.expect(one(no(0, 5*iv, 15*iv)), check)
	e.expect(one(no(0, 6*iv, 15*iv)), e.gcraItem("a", 10, iv, 1))
	e.clock.Advance(6*iv - 1)
	e.expect(one(no(0, 1, 9*iv+1)), e.gcraItem("a", 10, iv, 1))
	e.clock.Advance(1)
	e.expect(one(ok(0, 10*iv)), e.gcraItem("a", 10, iv, 1))
	// Adjusting a bucket never seen debits from now; several at once apply in order.
	e.adjust(store.Adjustment{Item: e.gcraItem("b", 10, iv, 0), Delta: 4},
		store.Adjustment{Item: e.gcraItem("b", 10, iv, 0), Delta: -1})
	e.expect(one(ok(7, 3*iv)), e.gcraItem("b", 10, iv, 0))
	// A huge debit is clamped, not overflowed.
	e.adjust(store.Adjustment{Item: e.gcraItem("c", 1, 1, 0), Delta: 1 << 62})
	e.expect(one(no(0, gcra.MaxSpan, gcra.MaxSpan)), e.gcraItem("c", 1, 1, 1))
}

func testAdjustFixedWindow(e *env) {
	const period = 3600 * second
	_, end := windowOf(e.clock.Now(), period)
	reset := end - e.clock.Now()
	adj := func(delta int64) store.Adjustment {
		return store.Adjustment{Item: e.windowItem("w", 5, period, 0), Delta: delta}
	}
	check := e.windowItem("w", 5, period, 0)
	e.decide(e.windowItem("w", 5, period, 2))
	e.adjust(adj(10))
	e.expect(one(no(0, reset, reset)), check)
	e.adjust(adj(-100))
	e.expect(one(ok(5, reset)), check)
	e.adjust(adj(3))
	e.expect(one(ok(2, reset)), check)
	// The adjustment belongs to the current window only.
	e.clock.Set(end)
	e.expect(one(ok(5, period)), check)
}

// An adjustment naming its window (a refund of that window's charge)
// applies while that window lasts and is skipped after it: it never takes
// from the next window's count.
func testAdjustNamedWindow(e *env) {
	const period = 3600 * second
	start, end := windowOf(e.clock.Now(), period)
	check := e.windowItem("w", 5, period, 0)
	refund := func(window int64) store.Adjustment {
		return store.Adjustment{Item: e.windowItem("w", 5, period, 0), Delta: -3, Window: window}
	}
	e.decide(e.windowItem("w", 5, period, 3))
	e.adjust(refund(start))
	e.expect(one(ok(5, end-e.clock.Now())), check)
	e.decide(e.windowItem("w", 5, period, 3))
	e.clock.Set(end)
	e.decide(e.windowItem("w", 5, period, 2))
	e.adjust(refund(start)) // the window charged is over
	e.expect(one(ok(3, period)), check)
	e.adjust(refund(end)) // the current one's
	e.expect(one(ok(5, period)), check)
}

func testDuplicateKeys(e *env) {
	a := e.gcraItem("a", 5, second, 3)
	// The second item sees the first's hits: 6 > 5, refused, nothing charged,
	// and both results show the untouched bucket.
	e.expect(store.Decision{Results: []store.Result{ok(5, 0), no(5, second, 0)}}, a, a)
	// 2 + 2 fit: both charged, and both results show the bucket after both.
	b := e.gcraItem("a", 5, second, 2)
	e.expect(store.Decision{Allowed: true, Results: []store.Result{ok(1, 4*second), ok(1, 4*second)}}, b, b)
	// A shadow duplicate that does not fit leaves the first one's charge.
	s := e.gcraItem("a", 5, second, 1)
	sh := s
	sh.Shadow = true
	sh.Hits = 2
	e.expect(store.Decision{Allowed: true, Results: []store.Result{ok(0, 5*second), no(0, 2*second, 5*second)}}, s, sh)

	_, end := windowOf(e.clock.Now(), 60*second)
	reset := end - e.clock.Now()
	w := e.windowItem("w", 3, 60*second, 2)
	e.expect(store.Decision{Results: []store.Result{ok(3, reset), no(3, reset, reset)}}, w, w)
	w.Hits = 1
	e.expect(store.Decision{Allowed: true, Results: []store.Result{ok(0, reset), ok(0, reset), ok(0, reset)}}, w, w, w)
}

func testAlgorithmsDoNotShareAKey(e *env) {
	e.decide(e.gcraItem("k", 2, second, 2))
	_, end := windowOf(e.clock.Now(), 60*second)
	e.expect(one(ok(1, end-e.clock.Now())), e.windowItem("k", 2, 60*second, 1))
	e.expect(one(no(0, second, 2*second)), e.gcraItem("k", 2, second, 1))
}

func testEmptyDecision(e *env) {
	got := e.decide()
	if !got.Allowed || len(got.Results) != 0 {
		e.t.Errorf("Decide() = %+v, want allowed with no results", got)
	}
	if err := e.st.Adjust(context.Background(), nil); err != nil {
		e.t.Errorf("Adjust(nil) = %v, want nil", err)
	}
}

func testInvalidItems(e *env) {
	valid := e.gcraItem("v", 5, second, 1)
	tests := []struct {
		name string
		edit func(*store.Item)
	}{
		{"empty key", func(it *store.Item) { it.Key = "" }},
		{"key above MaxKeyLen", func(it *store.Item) { it.Key = strings.Repeat("k", store.MaxKeyLen+1) }},
		{"limit 0", func(it *store.Item) { it.Limit = 0 }},
		{"negative limit", func(it *store.Item) { it.Limit = -1 }},
		{"period 0", func(it *store.Item) { it.Period = 0 }},
		{"negative hits", func(it *store.Item) { it.Hits = -1 }},
		{"gcra span above MaxSpan", func(it *store.Item) { it.Limit, it.Period = gcra.MaxSpan/1000+1, 1000 }},
		{"window above MaxSpan", func(it *store.Item) { it.Algorithm, it.Period = store.FixedWindow, gcra.MaxSpan+1 }},
		{"window limit above MaxSpan", func(it *store.Item) { it.Algorithm, it.Limit = store.FixedWindow, gcra.MaxSpan+1 }},
		{"unknown algorithm", func(it *store.Item) { it.Algorithm = 7 }},
	}
	for _, tc := range tests {
		bad := valid
		bad.Key = e.key("bad")
		tc.edit(&bad)
		if _, err := e.st.Decide(context.Background(), []store.Item{valid, bad}); !errors.Is(err, store.ErrInvalidItem) {
			e.t.Errorf("%s: Decide = %v, want an error wrapping ErrInvalidItem", tc.name, err)
		}
		if err := e.st.Adjust(context.Background(), []store.Adjustment{{Item: valid, Delta: 1}, {Item: bad, Delta: 1}}); !errors.Is(err, store.ErrInvalidItem) {
			e.t.Errorf("%s: Adjust = %v, want an error wrapping ErrInvalidItem", tc.name, err)
		}
	}
	// Nothing was charged by the requests that held an invalid item.
	e.expect(one(ok(5, 0)), e.gcraItem("v", 5, second, 0))
	// The longest key is valid.
	long := e.gcraItem("", 5, second, 1)
	long.Key = strings.Repeat("k", store.MaxKeyLen)
	e.decide(long)
}

func testCanceledContext(e *env) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := e.st.Decide(ctx, []store.Item{e.gcraItem("a", 5, second, 1)}); err == nil {
		e.t.Error("Decide with a canceled context = nil error, want an error")
	}
	e.expect(one(ok(5, 0)), e.gcraItem("a", 5, second, 0))
}

// hammer sends requests from 64 goroutines, spread over stores, and
// returns how many were admitted. Time is frozen.
func hammer(e *env, stores []store.Store, perWorker int, items ...store.Item) int64 {
	e.t.Helper()
	const workers = 64
	var admitted atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		st := stores[w%len(stores)]
		wg.Go(func() {
			for range perWorker {
				d, err := st.Decide(context.Background(), items)
				if err != nil {
					errs <- err
					return
				}
				if d.Allowed {
					admitted.Add(1)
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		e.t.Errorf("Decide under contention: %v", err)
	}
	return admitted.Load()
}

func testExactUnderContention(e *env) {
	const n = 100
	tests := []struct {
		name  string
		items []store.Item
		want  int64
	}{
		{"gcra", []store.Item{e.gcraItem("g", n, 3600*second, 1)}, n},
		{"window", []store.Item{e.windowItem("w", n, 24*3600*second, 1)}, n},
		// All or nothing under contention: the smaller bucket bounds both,
		// and the larger one is charged only for admitted requests.
		{"two buckets", []store.Item{e.gcraItem("big", 2*n, 3600*second, 1), e.gcraItem("small", n/2, 3600*second, 1)}, n / 2},
	}
	for _, tc := range tests {
		if got := hammer(e, []store.Store{e.st}, 10, tc.items...); got != tc.want {
			e.t.Errorf("%s: 64 goroutines × 10 requests, limit %d: admitted %d, want exactly %d", tc.name, tc.want, got, tc.want)
		}
	}
	e.expect(one(ok(2*n-n/2, (n/2)*3600*second)), e.gcraItem("big", 2*n, 3600*second, 0))
}

func testExactAcrossTwoInstances(e *env) {
	const n = 100
	other := e.open(e.t, e.clock.Now)
	it := e.gcraItem("g", n, 3600*second, 1)
	if got := hammer(e, []store.Store{e.st, other}, 10, it); got != n {
		e.t.Errorf("two instances, 64 goroutines × 10 requests, limit %d: admitted %d, want exactly %d", n, got, n)
	}
	if d, err := other.Decide(context.Background(), []store.Item{it}); err != nil || d.Allowed {
		e.t.Errorf("second instance after the limit: Decide = %+v, %v, want refused", d, err)
	}
}

// windowOf returns the fixed window of length period holding now.
func windowOf(now, period int64) (start, end int64) {
	start = now - now%period
	return start, start + period
}
