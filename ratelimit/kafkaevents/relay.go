package kafkaevents

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/leakytokens/leaky/ratelimit/ledger"
)

// Publisher writes a batch of events and returns nil only once every one of
// them is durably written. *Producer is one.
type Publisher interface {
	Publish(ctx context.Context, events []ledger.Event) error
}

var _ Publisher = (*Producer)(nil)

// RelayOptions configures a Relay. A zero field takes the default named in
// its comment.
type RelayOptions struct {
	Batch      int                   // events per outbox claim and per Publish; default 100
	Interval   time.Duration         // the wait once the outbox is drained, unless Notify comes first; default 1s
	Retention  time.Duration         // how long published events stay in the outbox; default 24h
	PruneEvery time.Duration         // how often published events older than Retention are deleted; default 10m
	MaxBackoff time.Duration         // the longest wait after failures (it doubles from 100ms); default 30s
	Logger     *slog.Logger          // default slog.Default()
	Registerer prometheus.Registerer // nil: the metrics are kept but not exported
}

func (o RelayOptions) withDefaults() RelayOptions {
	if o.Batch <= 0 {
		o.Batch = 100
	}
	if o.Interval <= 0 {
		o.Interval = time.Second
	}
	if o.Retention <= 0 {
		o.Retention = 24 * time.Hour
	}
	if o.PruneEvery <= 0 {
		o.PruneEvery = 10 * time.Minute
	}
	if o.MaxBackoff <= 0 {
		o.MaxBackoff = 30 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return o
}

// minBackoff is the wait after the first failure in a row.
const minBackoff = 100 * time.Millisecond

// Relay moves the outbox's events to a Publisher, at least once: an event
// is marked published only after Publish returned nil for it, so a crash or
// a failed publish leaves it for the next round (or another relay; several
// may run at once on one outbox). Events keep the outbox's order within a
// batch and from batch to batch.
type Relay struct {
	outbox  ledger.Outbox
	pub     Publisher
	opts    RelayOptions
	metrics *relayMetrics
	wake    chan struct{}
}

// NewRelay returns a relay of outbox through pub; it fails only when its
// metrics cannot be registered.
func NewRelay(outbox ledger.Outbox, pub Publisher, opts RelayOptions) (*Relay, error) {
	opts = opts.withDefaults()
	m, err := newRelayMetrics(opts.Registerer)
	if err != nil {
		return nil, err
	}
	return &Relay{outbox: outbox, pub: pub, opts: opts, metrics: m, wake: make(chan struct{}, 1)}, nil
}

// Notify wakes the relay to drain the outbox at once instead of at its next
// Interval; call it after committing an event. It never blocks, and a
// relay backing off after a failure waits out its backoff.
func (r *Relay) Notify() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// Run relays until ctx ends, then returns nil: it drains the outbox (batch
// after batch until one is short), prunes when PruneEvery has passed, and
// waits Interval or a Notify. A failure is logged and counted and retried
// after a backoff that doubles up to MaxBackoff.
func (r *Relay) Run(ctx context.Context) error {
	backoff := time.Duration(0)
	lastPrune := time.Now()
	for {
		wait := r.opts.Interval
		if err := r.drain(ctx); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			backoff = min(max(2*backoff, minBackoff), r.opts.MaxBackoff)
			r.opts.Logger.Warn("outbox relay failed", "err", err, "retry_in", backoff)
			wait = backoff
		} else {
			backoff = 0
			if time.Since(lastPrune) >= r.opts.PruneEvery {
				lastPrune = time.Now()
				r.prune(ctx)
			}
		}
		if !r.sleep(ctx, wait, backoff == 0) {
			return nil
		}
	}
}

// sleep waits d, or less when wakeable and Notify is called; it reports
// false when ctx ended.
func (r *Relay) sleep(ctx context.Context, d time.Duration, wakeable bool) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	wake := r.wake
	if !wakeable {
		wake = nil
	}
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
	case <-wake:
	}
	return true
}

// drain relays batches until one is shorter than Batch.
func (r *Relay) drain(ctx context.Context) error {
	for {
		n, err := r.outbox.Relay(ctx, r.opts.Batch, r.publish)
		if err != nil {
			r.metrics.failures.Inc()
			return fmt.Errorf("outbox relay: %w", err)
		}
		if n < r.opts.Batch {
			return nil
		}
	}
}

// publish is what the outbox calls with each claimed batch.
func (r *Relay) publish(ctx context.Context, events []ledger.Event) error {
	if err := r.pub.Publish(ctx, events); err != nil {
		return err
	}
	now := time.Now()
	r.metrics.published.Add(float64(len(events)))
	for _, ev := range events {
		r.metrics.lag.Observe(now.Sub(ev.OccurredAt).Seconds())
	}
	return nil
}

func (r *Relay) prune(ctx context.Context) {
	n, err := r.outbox.Prune(ctx, time.Now().Add(-r.opts.Retention))
	if err != nil {
		if ctx.Err() == nil {
			r.opts.Logger.Warn("outbox prune failed", "err", err)
		}
		return
	}
	r.metrics.pruned.Add(float64(n))
}
