package loadgen

import (
	"context"
	"sync"
	"time"
)

// runOpen sends request i at start + i/Rate from a pool of Concurrency
// workers. When a request falls due and every worker is busy the dispatcher
// waits for one; that request and every one falling due during the wait
// count as Late, and their latencies, measured from their due times, carry
// the wait. Requests still unsent when Duration runs out count as Dropped.
func runOpen(ctx context.Context, o Options, do func(context.Context, int) error) Result {
	if !(o.Rate > 0) {
		return Result{}
	}
	interval := float64(time.Second) / o.Rate
	due := func(i int64) time.Duration { return time.Duration(float64(i) * interval) }
	inSchedule := func(i int64) bool {
		return (o.Count == 0 || i < o.Count) && (o.Duration == 0 || due(i) < o.Duration)
	}

	// A token in slots is an outstanding request; jobs never blocks
	// because it holds at most as many requests as there are tokens.
	slots := make(chan struct{}, o.Concurrency)
	jobs := make(chan int64, o.Concurrency)
	tallies := make([]*tally, o.Concurrency)
	start := time.Now()
	var wg sync.WaitGroup
	for w := range tallies {
		t := newTally()
		tallies[w] = t
		wg.Go(func() {
			for i := range jobs {
				err := do(ctx, int(i))
				t.add(ctx, err, time.Since(start)-due(i))
				<-slots
			}
		})
	}

	var endC <-chan time.Time
	if o.Duration > 0 {
		end := time.NewTimer(o.Duration)
		defer end.Stop()
		endC = end.C
	}
	wait := time.NewTimer(time.Hour)
	wait.Stop()
	defer wait.Stop()

	var sent, late, dropped int64
	var behindUntil time.Duration // requests due before this waited for a slot
	lag := newHistogram()
dispatch:
	for i := int64(0); inSchedule(i); i++ {
		if d := due(i) - time.Since(start); d > 0 {
			wait.Reset(d)
			select {
			case <-wait.C:
			case <-ctx.Done():
				break dispatch
			}
		}
		waited := false
		select {
		case slots <- struct{}{}:
		default:
			select {
			case slots <- struct{}{}:
				waited, behindUntil = true, time.Since(start)
			case <-endC:
				for j := i; inSchedule(j); j++ {
					dropped++
				}
				break dispatch
			case <-ctx.Done():
				dropped++
				break dispatch
			}
		}
		now := time.Since(start)
		if waited || due(i) < behindUntil {
			late++
		}
		lag.record(now - due(i))
		jobs <- i
		sent++
	}
	close(jobs)
	wg.Wait()

	r := merge(tallies)
	r.Duration = time.Since(start)
	r.Intended, r.Late, r.Dropped, r.Lag = sent+dropped, late, dropped, lag.latency()
	return r
}
