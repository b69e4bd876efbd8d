package loadgen

import (
	"math"
	"strings"
	"testing"
	"time"
)

func TestBucketsCoverEveryValue(t *testing.T) {
	if got := bucketOf(maxValue); got != nBuckets-1 {
		t.Fatalf("bucketOf(maxValue) = %d, want nBuckets-1 = %d", got, nBuckets-1)
	}
	// Buckets are contiguous and each holds exactly its range.
	var next int64
	for b := range nBuckets {
		low, width := bucketRange(b)
		if low != next {
			t.Fatalf("bucketRange(%d) starts at %d, want %d (contiguous)", b, low, next)
		}
		if got := bucketOf(low); got != b {
			t.Fatalf("bucketOf(%d) = %d, want %d", low, got, b)
		}
		if got := bucketOf(low + width - 1); got != b {
			t.Fatalf("bucketOf(%d) = %d, want %d", low+width-1, got, b)
		}
		if b >= 2*subs && float64(width)/float64(low) > 1.0/subs {
			t.Fatalf("bucket %d: width %d is more than 1/%d of %d", b, width, subs, low)
		}
		next = low + width
	}
	if next != maxValue+1 {
		t.Fatalf("buckets end at %d, want %d", next, int64(maxValue+1))
	}
}

func TestQuantile(t *testing.T) {
	ms := func(n int) time.Duration { return time.Duration(n) * time.Millisecond }
	tests := []struct {
		name string
		in   []time.Duration
		want Latency
	}{
		{"empty", nil, Latency{}},
		{"one value", []time.Duration{ms(3)}, Latency{Min: ms(3), Mean: ms(3), P50: ms(3), P90: ms(3), P99: ms(3), P999: ms(3), Max: ms(3)}},
		{"1..1000 ms", seq(1, 1000, time.Millisecond), Latency{
			Min: ms(1), Mean: 500500 * time.Microsecond, P50: ms(500), P90: ms(900), P99: ms(990), P999: ms(999), Max: ms(1000),
		}},
		{"small exact values", seq(1, 100, time.Nanosecond), Latency{Min: 1, Mean: 50, P50: 50, P90: 90, P99: 99, P999: 100, Max: 100}},
		{"a slow tail", append(repeat(980, time.Millisecond), repeat(20, 2*time.Second)...), Latency{
			Min: ms(1), Mean: 40980 * time.Microsecond, P50: ms(1), P90: ms(1), P99: 2 * time.Second, P999: 2 * time.Second, Max: 2 * time.Second,
		}},
		{"negative counts as zero", []time.Duration{-5}, Latency{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHistogram()
			for _, d := range tt.in {
				h.record(d)
			}
			assertLatency(t, h.latency(), tt.want, 0.004)
		})
	}
}

func TestMerge(t *testing.T) {
	a, b, all := newHistogram(), newHistogram(), newHistogram()
	for i, d := range seq(1, 999, time.Microsecond) {
		all.record(d)
		if i%3 == 0 {
			a.record(d)
		} else {
			b.record(d)
		}
	}
	a.merge(b)
	if a.latency() != all.latency() || a.n != all.n {
		t.Errorf("merged latency = %+v (n %d), want %+v (n %d)", a.latency(), a.n, all.latency(), all.n)
	}
}

// assertLatency compares within a relative tolerance; Min and Max exactly.
func assertLatency(t *testing.T, got, want Latency, tol float64) {
	t.Helper()
	near := func(g, w time.Duration) bool { return math.Abs(float64(g-w)) <= tol*float64(w)+0.5 }
	if got.Min != want.Min || got.Max != want.Max || !near(got.Mean, want.Mean) || !near(got.P50, want.P50) ||
		!near(got.P90, want.P90) || !near(got.P99, want.P99) || !near(got.P999, want.P999) {
		t.Errorf("latency = %+v, want %+v (±%.1f%%, min and max exact)", got, want, 100*tol)
	}
}

// seq returns from·unit, …, to·unit.
func seq(from, to int, unit time.Duration) []time.Duration {
	var ds []time.Duration
	for i := from; i <= to; i++ {
		ds = append(ds, time.Duration(i)*unit)
	}
	return ds
}

func repeat(n int, d time.Duration) []time.Duration {
	ds := make([]time.Duration, n)
	for i := range ds {
		ds[i] = d
	}
	return ds
}

// errLines splits a joined error into its messages; nil for nil.
func errLines(err error) []string {
	if err == nil {
		return nil
	}
	return strings.Split(err.Error(), "\n")
}
