package loadgen

import (
	"math"
	"math/bits"
	"time"
)

// The histogram is log-linear: values below 2^(subBits+1) ns have a bucket
// each; above, every power of two is split into 2^subBits equal buckets, so a
// bucket is at most 1/2^subBits (0.78%) of its lower bound wide. Reporting a
// bucket's midpoint bounds the relative error by half that (0.39%).
const (
	subBits = 7
	subs    = 1 << subBits
	// maxValue caps what is recorded (about 18 minutes); longer latencies
	// count as maxValue in the percentiles, while Max stays exact.
	maxBits  = 40
	maxValue = 1<<maxBits - 1
	// nBuckets is bucketOf(maxValue) + 1.
	nBuckets = (maxBits - subBits + 1) * subs
)

// histogram records latencies. It is not safe for concurrent use: each
// worker owns one and they are merged at the end of a run. The zero value is
// not usable; call newHistogram.
type histogram struct {
	counts []int64
	n      int64
	sum    float64 // ns
	min    int64   // ns, exact
	max    int64   // ns, exact
}

func newHistogram() *histogram {
	return &histogram{counts: make([]int64, nBuckets), min: math.MaxInt64}
}

// bucketOf returns the bucket of v ns (0 ≤ v ≤ maxValue).
func bucketOf(v int64) int {
	shift := max(0, bits.Len64(uint64(v))-(subBits+1))
	return shift*subs + int(v>>shift)
}

// bucketRange returns the smallest value of bucket b and the bucket's width.
func bucketRange(b int) (low, width int64) {
	if b < 2*subs {
		return int64(b), 1
	}
	shift := b/subs - 1
	mantissa := int64(b - shift*subs)
	return mantissa << shift, 1 << shift
}

// record adds one latency; negative durations count as 0.
func (h *histogram) record(d time.Duration) {
	v := max(int64(d), 0)
	h.n++
	h.sum += float64(v)
	h.min = min(h.min, v)
	h.max = max(h.max, v)
	h.counts[bucketOf(min(v, maxValue))]++
}

// merge adds o's values to h.
func (h *histogram) merge(o *histogram) {
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.n += o.n
	h.sum += o.sum
	h.min = min(h.min, o.min)
	h.max = max(h.max, o.max)
}

// quantile returns the nearest-rank q-quantile (0 < q ≤ 1): the smallest
// recorded value with at least q·n values at or below it, to within 0.4%,
// clamped to the exact minimum and maximum. It is 0 for an empty histogram.
func (h *histogram) quantile(q float64) time.Duration {
	if h.n == 0 {
		return 0
	}
	rank := max(int64(math.Ceil(q*float64(h.n))), 1)
	var seen int64
	for b, c := range h.counts {
		seen += c
		if seen >= rank {
			low, width := bucketRange(b)
			return time.Duration(min(max(low+(width-1)/2, h.min), h.max))
		}
	}
	return time.Duration(h.max)
}

// latency summarises h.
func (h *histogram) latency() Latency {
	if h.n == 0 {
		return Latency{}
	}
	return Latency{
		Min:  time.Duration(h.min),
		Mean: time.Duration(h.sum / float64(h.n)),
		P50:  h.quantile(0.50),
		P90:  h.quantile(0.90),
		P99:  h.quantile(0.99),
		P999: h.quantile(0.999),
		Max:  time.Duration(h.max),
	}
}
