// Package loadgen load-tests request/response servers, in the first place
// Leaky Tokens' RateLimitService and ext_authz Check over one gRPC
// connection (DESIGN §8).
//
// Run is the generic core: a closed loop (N workers sending back to back) or
// an open loop (a fixed rate, each latency measured from the request's
// intended send time, so a stalled server cannot hide its stall by slowing
// the sender — no coordinated omission). RateLimit and Authz build the
// requests; ProcessCPU reads a process's CPU time; Report formats a run.
package loadgen

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Mode is how requests are paced.
type Mode string

const (
	// Closed: Concurrency workers each send the next request as soon as the
	// previous one is answered; throughput is what the server sustains.
	Closed Mode = "closed"
	// Open: requests start at a fixed Rate whatever the server does; at
	// most Concurrency are outstanding.
	Open Mode = "open"
)

// Options describe one run. A run ends at the first of: Duration elapsed,
// Count requests, ctx done. With neither Duration nor Count it lasts until
// ctx is done.
type Options struct {
	Mode Mode // Closed when empty
	// Concurrency is the number of workers of a closed loop and the bound
	// on outstanding requests of an open loop. Values below 1 mean 1.
	Concurrency int
	// Rate is the open loop's requests per second; request i is due at
	// start + i/Rate. Ignored by a closed loop.
	Rate     float64
	Duration time.Duration // 0: no time bound
	Count    int64         // 0: no count bound
}

// Validate reports every problem with o.
func (o Options) Validate() error {
	var errs []error
	switch o.Mode {
	case "", Closed:
	case Open:
		if !(o.Rate > 0) {
			errs = append(errs, errors.New("rate: must be positive in open mode"))
		}
	default:
		errs = append(errs, fmt.Errorf("mode %q: must be closed or open", o.Mode))
	}
	if o.Concurrency < 1 {
		errs = append(errs, errors.New("concurrency: must be at least 1"))
	}
	if o.Duration < 0 {
		errs = append(errs, errors.New("duration: must not be negative"))
	}
	if o.Count < 0 {
		errs = append(errs, errors.New("count: must not be negative"))
	}
	return errors.Join(errs...)
}

// Latency summarises the latencies of the completed requests. Percentiles
// are nearest-rank and within 0.4% of the recorded value; Min and Max are
// exact. An open loop measures each latency from the request's intended
// send time, a closed loop from the actual one.
type Latency struct {
	Min, Mean, P50, P90, P99, P999, Max time.Duration
}

// Result is what a run measured.
type Result struct {
	Options Options
	// Count is the requests that completed, answered or failed. Requests
	// cut short because ctx was cancelled are not counted.
	Count int64
	// Errors counts the failed requests by gRPC code (for an error without
	// a status: DeadlineExceeded or Canceled for a context error, else
	// Unknown). Nil when none failed.
	Errors map[codes.Code]int64
	// Duration runs from the start of the run to the last completion.
	Duration time.Duration
	Rate     float64 // Count / Duration, in requests per second
	Latency  Latency

	// Open loop only.
	Intended int64 // requests the schedule called for before the run ended
	// Late counts the requests that found all Concurrency slots busy when
	// due, or fell due while the sender waited for a slot; the wait is in
	// their latency.
	Late int64
	// Dropped is the requests never sent: their slot did not free before
	// the run's Duration ran out (or ctx ended).
	Dropped int64
	// Lag is how long after its due time each sent request was handed to a
	// worker: waits for a slot, and the sender's own timer wake-ups (Go
	// timers shorter than 1 ms may fire up to 1 ms late when the process is
	// idle). It is part of every latency; a large Lag with few Late
	// requests means the load generator, not the server, fell behind.
	Lag Latency
}

// ErrorCount is the number of failed requests.
func (r Result) ErrorCount() int64 {
	var n int64
	for _, c := range r.Errors {
		n += c
	}
	return n
}

// Run sends requests by calling do(ctx, i) with i = 0, 1, 2, … from several
// goroutines at once, paced by o, and measures them. do must be safe for
// concurrent use and return an error only for a failed request (a gRPC
// status error is counted by its code). Run expects Options that pass
// Validate; an open loop with Rate ≤ 0 sends nothing. It returns when every
// request it started has completed.
func Run(ctx context.Context, o Options, do func(ctx context.Context, i int) error) Result {
	o.Concurrency = max(o.Concurrency, 1)
	if o.Mode == "" {
		o.Mode = Closed
	}
	var r Result
	if o.Mode == Open {
		r = runOpen(ctx, o, do)
	} else {
		r = runClosed(ctx, o, do)
	}
	r.Options = o
	if r.Duration > 0 {
		r.Rate = float64(r.Count) / r.Duration.Seconds()
	}
	return r
}

// tally is one worker's measurements.
type tally struct {
	hist   *histogram
	errors map[codes.Code]int64
	count  int64
}

func newTally() *tally { return &tally{hist: newHistogram()} }

// add records one completed request, unless ctx was cancelled under it.
func (t *tally) add(ctx context.Context, err error, latency time.Duration) {
	if err != nil && ctx.Err() != nil {
		return
	}
	t.count++
	t.hist.record(latency)
	if err != nil {
		if t.errors == nil {
			t.errors = make(map[codes.Code]int64)
		}
		t.errors[codeOf(err)]++
	}
}

// codeOf is err's gRPC code; a context error without a status gets the
// matching code, any other error codes.Unknown.
func codeOf(err error) codes.Code {
	if s, ok := status.FromError(err); ok {
		return s.Code()
	}
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return codes.DeadlineExceeded
	case errors.Is(err, context.Canceled):
		return codes.Canceled
	}
	return codes.Unknown
}

// merge folds the workers' tallies into a Result.
func merge(ts []*tally) Result {
	h := newHistogram()
	var r Result
	for _, t := range ts {
		h.merge(t.hist)
		r.Count += t.count
		for c, n := range t.errors {
			if r.Errors == nil {
				r.Errors = make(map[codes.Code]int64)
			}
			r.Errors[c] += n
		}
	}
	r.Latency = h.latency()
	return r
}

func runClosed(ctx context.Context, o Options, do func(context.Context, int) error) Result {
	var next atomic.Int64
	tallies := make([]*tally, o.Concurrency)
	start := time.Now()
	deadline := start.Add(o.Duration)
	var wg sync.WaitGroup
	for w := range tallies {
		t := newTally()
		tallies[w] = t
		wg.Go(func() {
			for ctx.Err() == nil {
				i := next.Add(1) - 1
				if o.Count > 0 && i >= o.Count {
					return
				}
				t0 := time.Now()
				if o.Duration > 0 && !t0.Before(deadline) {
					return
				}
				err := do(ctx, int(i))
				t.add(ctx, err, time.Since(t0))
			}
		})
	}
	wg.Wait()
	r := merge(tallies)
	r.Duration = time.Since(start)
	return r
}
