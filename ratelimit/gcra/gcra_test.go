package gcra

import (
	"fmt"
	"math"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/leakytokens/leaky/ratelimit/gcra/gcratest"
)

func TestSteps(t *testing.T) {
	seen := map[string]bool{}
	for _, s := range gcratest.Steps(t) {
		t.Run(s.Name, func(t *testing.T) {
			if seen[s.Name] {
				t.Fatalf("duplicate step name %q", s.Name)
			}
			seen[s.Name] = true
			l := Limit{Burst: s.Burst, Interval: s.Interval}
			if err := l.Validate(); err != nil {
				t.Fatalf("step limit %+v: %v", l, err)
			}
			if s.WantTAT < s.Now {
				t.Fatalf("want_tat %d is before now %d: the table is wrong", s.WantTAT, s.Now)
			}
			switch s.Op {
			case "decide":
				if s.Want == nil {
					t.Fatal("decide step without want")
				}
				gotTAT, got := Decide(s.Now, s.TAT, l, s.N)
				want := Result{Allowed: s.Want.Allowed, Remaining: s.Want.Remaining, RetryAfter: s.Want.RetryAfter, ResetAfter: s.Want.ResetAfter}
				if gotTAT != s.WantTAT {
					t.Errorf("Decide(%d, %d, %+v, %d) TAT = %d, want %d", s.Now, s.TAT, l, s.N, gotTAT, s.WantTAT)
				}
				if diff := cmp.Diff(want, got); diff != "" {
					t.Errorf("Decide(%d, %d, %+v, %d) result (-want +got):\n%s", s.Now, s.TAT, l, s.N, diff)
				}
			case "adjust":
				if s.Want != nil {
					t.Fatal("adjust step with want")
				}
				if got := Adjust(s.Now, s.TAT, l, s.Delta); got != s.WantTAT {
					t.Errorf("Adjust(%d, %d, %+v, %d) = %d, want %d", s.Now, s.TAT, l, s.Delta, got, s.WantTAT)
				}
			default:
				t.Fatalf("unknown op %q", s.Op)
			}
		})
	}
}

// TestInvariants checks, over a grid of states, the properties the step
// table states by example: a refusal changes nothing, an admission moves the
// TAT by exactly n intervals, waiting RetryAfter admits the same request, and
// waiting one µs less does not.
func TestInvariants(t *testing.T) {
	const now = 1_700_000_000_000_000
	limits := []Limit{{Burst: 1, Interval: 1}, {Burst: 10, Interval: 100_000}, {Burst: 3, Interval: 333_333}, {Burst: 7, Interval: 86_400_000_000}}
	for _, l := range limits {
		tau := l.Tolerance()
		for _, ahead := range []int64{-tau, 0, 1, l.Interval / 2, l.Interval, tau - 1, tau, tau + 1, 3 * tau} {
			for _, n := range []int64{0, 1, 2, l.Burst - 1, l.Burst, l.Burst + 1} {
				tat := now + ahead
				name := fmt.Sprintf("burst %d interval %d ahead %d n %d", l.Burst, l.Interval, ahead, n)
				next, r := Decide(now, tat, l, n)
				base := max(tat, now)
				if r.Remaining < 0 || r.Remaining > l.Burst {
					t.Errorf("%s: remaining %d out of [0, %d]", name, r.Remaining, l.Burst)
				}
				if r.Remaining != Remaining(now, next, l) {
					t.Errorf("%s: result remaining %d, Remaining(now, next) %d", name, r.Remaining, Remaining(now, next, l))
				}
				if r.ResetAfter != next-now {
					t.Errorf("%s: ResetAfter %d, want next-now %d", name, r.ResetAfter, next-now)
				}
				switch {
				case r.Allowed:
					if next != base+n*l.Interval || r.RetryAfter != 0 {
						t.Errorf("%s: allowed with TAT %d retry %d, want TAT %d retry 0", name, next, r.RetryAfter, base+n*l.Interval)
					}
				case n > l.Burst:
					if r.RetryAfter != -1 || next != base {
						t.Errorf("%s: never-fits got retry %d TAT %d, want -1 and %d", name, r.RetryAfter, next, base)
					}
				default:
					if next != base || r.RetryAfter <= 0 {
						t.Fatalf("%s: refused with TAT %d retry %d", name, next, r.RetryAfter)
					}
					if _, later := Decide(now+r.RetryAfter, tat, l, n); !later.Allowed {
						t.Errorf("%s: not admitted after RetryAfter %d", name, r.RetryAfter)
					}
					if _, early := Decide(now+r.RetryAfter-1, tat, l, n); early.Allowed {
						t.Errorf("%s: admitted 1 µs before RetryAfter %d", name, r.RetryAfter)
					}
				}
			}
		}
	}
}

func TestDecideNegativeNIsCheckOnly(t *testing.T) {
	l := Limit{Burst: 10, Interval: 100}
	gotTAT, got := Decide(1000, 1500, l, -5)
	wantTAT, want := Decide(1000, 1500, l, 0)
	if gotTAT != wantTAT || got != want {
		t.Errorf("Decide(n=-5) = %d, %+v, want %d, %+v (same as n=0)", gotTAT, got, wantTAT, want)
	}
}

func TestNewLimit(t *testing.T) {
	tests := []struct {
		name    string
		burst   int64
		rate    float64
		want    Limit
		wantErr bool
	}{
		{name: "ten per second", burst: 10, rate: 10, want: Limit{Burst: 10, Interval: 100_000}},
		{name: "one per second", burst: 1, rate: 1, want: Limit{Burst: 1, Interval: 1_000_000}},
		{name: "fastest rate", burst: 5, rate: 1e6, want: Limit{Burst: 5, Interval: 1}},
		{name: "interval rounds to nearest", burst: 5, rate: 3, want: Limit{Burst: 5, Interval: 333_333}},
		{name: "slow rate", burst: 100, rate: 100.0 / 86400, want: Limit{Burst: 100, Interval: 864_000_000}},
		{name: "zero burst", burst: 0, rate: 1, wantErr: true},
		{name: "negative burst", burst: -1, rate: 1, wantErr: true},
		{name: "zero rate", burst: 1, rate: 0, wantErr: true},
		{name: "negative rate", burst: 1, rate: -1, wantErr: true},
		{name: "NaN rate", burst: 1, rate: math.NaN(), wantErr: true},
		{name: "infinite rate", burst: 1, rate: math.Inf(1), wantErr: true},
		{name: "rate above 1e6", burst: 1, rate: 2e6, wantErr: true},
		// An interval beyond int64 used to convert to MinInt64 and be
		// clamped to 1 µs, the fastest possible rate.
		{name: "interval beyond int64", burst: 1, rate: 1e-20, wantErr: true},
		{name: "smallest positive rate", burst: 1, rate: math.SmallestNonzeroFloat64, wantErr: true},
		{name: "interval beyond MaxSpan", burst: 1, rate: 1e6 / float64(MaxSpan) / 2, wantErr: true},
		{name: "burst spans more than MaxSpan", burst: MaxSpan/1000 + 1, rate: 1000, wantErr: true},
		{name: "burst spans exactly MaxSpan", burst: MaxSpan / 1000, rate: 1000, want: Limit{Burst: MaxSpan / 1000, Interval: 1000}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := NewLimit(tc.burst, tc.rate)
			if tc.wantErr {
				if err == nil {
					t.Fatalf("NewLimit(%d, %v) = %+v, want an error", tc.burst, tc.rate, got)
				}
				return
			}
			if err != nil {
				t.Fatalf("NewLimit(%d, %v): %v", tc.burst, tc.rate, err)
			}
			if got != tc.want {
				t.Errorf("NewLimit(%d, %v) = %+v, want %+v", tc.burst, tc.rate, got, tc.want)
			}
		})
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name string
		l    Limit
		ok   bool
	}{
		{name: "zero value", l: Limit{}},
		{name: "zero interval", l: Limit{Burst: 1}},
		{name: "zero burst", l: Limit{Interval: 1}},
		{name: "negative interval", l: Limit{Burst: 1, Interval: -1}},
		{name: "smallest", l: Limit{Burst: 1, Interval: 1}, ok: true},
		{name: "span exactly MaxSpan", l: Limit{Burst: MaxSpan, Interval: 1}, ok: true},
		{name: "span above MaxSpan", l: Limit{Burst: MaxSpan/2 + 1, Interval: 2}},
		{name: "interval above MaxSpan", l: Limit{Burst: 1, Interval: MaxSpan + 1}},
		{name: "product overflows int64", l: Limit{Burst: math.MaxInt64, Interval: math.MaxInt64}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.l.Validate(); (err == nil) != tc.ok {
				t.Errorf("%+v.Validate() = %v, want ok %v", tc.l, err, tc.ok)
			}
		})
	}
}

func TestRateAndTolerance(t *testing.T) {
	l := Limit{Burst: 10, Interval: 100_000}
	if got, want := l.Rate(), 10.0; got != want {
		t.Errorf("Rate() = %v, want %v", got, want)
	}
	if got, want := l.Tolerance(), int64(1_000_000); got != want {
		t.Errorf("Tolerance() = %v, want %v", got, want)
	}
}

func TestRemaining(t *testing.T) {
	l := Limit{Burst: 10, Interval: 100}
	tests := []struct {
		name     string
		now, tat int64
		want     int64
	}{
		{name: "never seen", now: 5000, tat: 0, want: 10},
		{name: "idle", now: 5000, tat: 4000, want: 10},
		{name: "partly used rounds down", now: 5000, tat: 5150, want: 8},
		{name: "full", now: 5000, tat: 6000, want: 0},
		{name: "in debt", now: 5000, tat: 9000, want: 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := Remaining(tc.now, tc.tat, l); got != tc.want {
				t.Errorf("Remaining(%d, %d, %+v) = %d, want %d", tc.now, tc.tat, l, got, tc.want)
			}
		})
	}
}
