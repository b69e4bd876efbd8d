package loadgen

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// The tests in this file run in a synctest bubble: time is fake and
// advances only when every goroutine waits, so a do that sleeps has exactly
// the latency it sleeps and the schedules are exact.

// sleeper returns a do that sleeps latency(i) and fails with fail(i).
func sleeper(latency func(i int) time.Duration, fail func(i int) error) func(context.Context, int) error {
	return func(ctx context.Context, i int) error {
		if d := latency(i); d > 0 {
			time.Sleep(d)
		}
		if fail != nil {
			return fail(i)
		}
		return nil
	}
}

func constant(d time.Duration) func(int) time.Duration { return func(int) time.Duration { return d } }

// ignoreOptions leaves Result.Options out of comparisons.
var ignoreOptions = cmpopts.IgnoreFields(Result{}, "Options", "Latency", "Lag")

func TestRunClosedSendsEveryIndexOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var mu sync.Mutex
		seen := make(map[int]int)
		do := func(_ context.Context, i int) error {
			mu.Lock()
			seen[i]++
			mu.Unlock()
			time.Sleep(time.Duration(1+i%7) * time.Millisecond)
			switch {
			case i%10 == 0:
				return status.Error(codes.Unavailable, "down")
			case i%25 == 1:
				return fmt.Errorf("call: %w", context.DeadlineExceeded) // no status: counted by the context error
			case i%25 == 2:
				return errors.New("broken")
			}
			return nil
		}
		got := Run(t.Context(), Options{Concurrency: 8, Count: 1000}, do)
		want := Result{Count: 1000, Errors: map[codes.Code]int64{codes.Unavailable: 100, codes.DeadlineExceeded: 40, codes.Unknown: 40}}
		if diff := cmp.Diff(want, got, ignoreOptions, cmpopts.IgnoreFields(Result{}, "Duration", "Rate")); diff != "" {
			t.Errorf("Run(closed, count 1000) mismatch (-want +got):\n%s", diff)
		}
		for i := range 1000 {
			if seen[i] != 1 {
				t.Fatalf("request %d sent %d times, want 1", i, seen[i])
			}
		}
		if len(seen) != 1000 {
			t.Errorf("sent %d distinct requests, want 1000", len(seen))
		}
	})
}

func TestRunClosedLatencies(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		// Request i takes i+1 ms: the latencies are exactly 1..1000 ms.
		got := Run(t.Context(), Options{Concurrency: 4, Count: 1000}, sleeper(func(i int) time.Duration {
			return time.Duration(i+1) * time.Millisecond
		}, nil))
		ms := func(n int) time.Duration { return time.Duration(n) * time.Millisecond }
		assertLatency(t, got.Latency, Latency{
			Min: ms(1), Mean: 500500 * time.Microsecond, P50: ms(500), P90: ms(900), P99: ms(990), P999: ms(999), Max: ms(1000),
		}, 0.004)
	})
}

func TestRunClosedDuration(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		// 4 workers × 10 ms per request for 1 s: each starts requests at 0,
		// 10, …, 990 ms, 100 apiece.
		got := Run(t.Context(), Options{Concurrency: 4, Duration: time.Second}, sleeper(constant(10*time.Millisecond), nil))
		want := Result{Count: 400, Duration: time.Second, Rate: 400}
		if diff := cmp.Diff(want, got, ignoreOptions); diff != "" {
			t.Errorf("Run(closed, 1 s) mismatch (-want +got):\n%s", diff)
		}
		if got.Latency.P50 != 10*time.Millisecond || got.Latency.Max != 10*time.Millisecond {
			t.Errorf("Run(closed, 1 s) latency = %+v, want 10 ms throughout", got.Latency)
		}
	})
}

func TestRunClosedCancelled(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		time.AfterFunc(95*time.Millisecond, cancel)
		do := func(ctx context.Context, _ int) error {
			select {
			case <-time.After(10 * time.Millisecond):
				return nil
			case <-ctx.Done():
				return status.FromContextError(ctx.Err()).Err()
			}
		}
		got := Run(ctx, Options{Concurrency: 2}, do)
		// 9 rounds of 2 complete; the tenth is cut short and not counted.
		want := Result{Count: 18, Duration: 95 * time.Millisecond, Rate: 18 / 0.095}
		if diff := cmp.Diff(want, got, ignoreOptions, cmpopts.EquateApprox(1e-9, 0)); diff != "" {
			t.Errorf("Run(closed, cancelled at 95 ms) mismatch (-want +got):\n%s", diff)
		}
	})
}

func TestRunOpen(t *testing.T) {
	ms := func(n int) time.Duration { return time.Duration(n) * time.Millisecond }
	tests := []struct {
		name        string
		opts        Options
		latency     time.Duration
		want        Result
		wantLatency Latency
		wantLag     Latency
	}{
		{
			name:        "keeps up",
			opts:        Options{Mode: Open, Rate: 1000, Concurrency: 4, Duration: time.Second},
			latency:     ms(1),
			want:        Result{Count: 1000, Intended: 1000, Duration: ms(1000), Rate: 1000},
			wantLatency: Latency{Min: ms(1), Mean: ms(1), P50: ms(1), P90: ms(1), P99: ms(1), P999: ms(1), Max: ms(1)},
			wantLag:     Latency{},
		},
		{
			name:        "count bound",
			opts:        Options{Mode: Open, Rate: 100, Concurrency: 4, Count: 10},
			latency:     ms(5),
			want:        Result{Count: 10, Intended: 10, Duration: ms(95), Rate: 10 / 0.095},
			wantLatency: Latency{Min: ms(5), Mean: ms(5), P50: ms(5), P90: ms(5), P99: ms(5), P999: ms(5), Max: ms(5)},
			wantLag:     Latency{},
		},
		{
			// 1000/s due, but 4 slots of 10 ms serve only 400/s. Request
			// 4k+m (m < 4) is sent at 10k+m ms instead of 4k+m ms and
			// completes 10 ms later: latency 6k+10 ms from its due time.
			// Request 400 is still waiting when the run ends at 995 ms.
			name:    "slow server",
			opts:    Options{Mode: Open, Rate: 1000, Concurrency: 4, Duration: ms(995)},
			latency: ms(10),
			want:    Result{Count: 400, Intended: 995, Late: 396, Dropped: 595, Duration: ms(1003), Rate: 400 / 1.003},
			wantLatency: Latency{
				Min: ms(10), Mean: ms(307), P50: ms(304), P90: ms(544), P99: ms(598), P999: ms(604), Max: ms(604),
			},
			// Request 4k+m waits 6k ms for its slot.
			wantLag: Latency{Min: 0, Mean: ms(297), P50: ms(294), P90: ms(534), P99: ms(588), P999: ms(594), Max: ms(594)},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				got := Run(t.Context(), tt.opts, sleeper(constant(tt.latency), nil))
				if diff := cmp.Diff(tt.want, got, ignoreOptions, cmpopts.EquateApprox(1e-9, 0)); diff != "" {
					t.Errorf("Run(%+v) mismatch (-want +got):\n%s", tt.opts, diff)
				}
				assertLatency(t, got.Latency, tt.wantLatency, 0.004)
				assertLatency(t, got.Lag, tt.wantLag, 0.004)
			})
		})
	}
}

func TestRunOpenCancelled(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		time.AfterFunc(25500*time.Microsecond, cancel)
		// One slot, 10 ms per request, one due every 5 ms: request 0 at 0,
		// 1 waits to 10, 2 waits to 20, 3 is waiting when ctx ends at 25.5.
		got := Run(ctx, Options{Mode: Open, Rate: 200, Concurrency: 1}, func(ctx context.Context, _ int) error {
			select {
			case <-time.After(10 * time.Millisecond):
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		})
		want := Result{Count: 2, Intended: 4, Late: 2, Dropped: 1, Duration: 25500 * time.Microsecond, Rate: 2 / 0.0255}
		if diff := cmp.Diff(want, got, ignoreOptions, cmpopts.EquateApprox(1e-9, 0)); diff != "" {
			t.Errorf("Run(open, cancelled) mismatch (-want +got):\n%s", diff)
		}
	})
}

func TestOptionsValidate(t *testing.T) {
	tests := []struct {
		name string
		in   Options
		want []string
	}{
		{"closed", Options{Concurrency: 1}, nil},
		{"open", Options{Mode: Open, Rate: 10, Concurrency: 2, Duration: time.Second}, nil},
		{"open without rate", Options{Mode: Open, Concurrency: 1}, []string{"rate: must be positive in open mode"}},
		{"bad mode and concurrency", Options{Mode: "ajar"}, []string{`mode "ajar": must be closed or open`, "concurrency: must be at least 1"}},
		{"negative bounds", Options{Concurrency: 1, Duration: -1, Count: -1}, []string{"duration: must not be negative", "count: must not be negative"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, errLines(tt.in.Validate())); diff != "" {
				t.Errorf("Validate(%+v) mismatch (-want +got):\n%s", tt.in, diff)
			}
		})
	}
}
