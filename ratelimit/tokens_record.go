package ratelimit

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/leakytokens/leaky/internal/serve"
	"github.com/leakytokens/leaky/ratelimit/ledger"
)

// Bounds of the usage writes to the ledger.
const (
	// recordTimeout bounds the one write tried on the request path.
	recordTimeout = time.Second
	// recordQueue is how many usages wait for the writer at most; beyond
	// it a usage is logged as not recorded.
	recordQueue = 10_000
	// writerTimeout bounds each of the writer's attempts.
	writerTimeout = 5 * time.Second
	// writerBackoff is the writer's first retry's mean delay, doubled each
	// retry up to writerMaxBackoff.
	writerBackoff    = 50 * time.Millisecond
	writerMaxBackoff = 30 * time.Second
	// writerDrain is what the writer spends on its queue once stopped.
	writerDrain = 5 * time.Second
)

// recordSettlement writes st to the ledger as a ledger.Usage with its
// event (the Reservations' recorder), through s.usages.
func (s *Service) recordSettlement(ctx context.Context, st Settlement) {
	rec := s.record
	if rec == nil {
		return
	}
	u := ledger.Usage{
		ID: st.ID, Kind: st.Kind, UserID: st.Owner.UserID, OrgID: st.Owner.OrgID, Provider: st.Owner.Provider,
		Tier: st.Owner.Tier, Estimate: st.Estimate, Actual: st.Actual, Quotas: st.Quotas, At: st.At.UTC(),
	}
	s.usages.write(ctx, rec, u, ledger.NewUsageEvent(ledger.NewID(), u))
}

// usageWrite is one usage to record, with its event, through rec.
type usageWrite struct {
	rec ledger.Recorder
	u   ledger.Usage
	ev  ledger.Event
}

// usageWriter records settled usage in the ledger without holding up the
// request that settled it: one attempt within recordTimeout on the
// caller's path, then a bounded queue that one goroutine (run, owned by
// the service's Run) drains, retrying with backoff until the write is
// done. The store side is applied before, so what the ledger can miss is
// bounded by the queue and the writes in flight: a usage arriving with
// the queue full, or still queued when the writer's drain at shutdown
// ends, is logged (usage_id) as not recorded. A usage the ledger refuses
// as invalid or conflicting is logged, never retried.
type usageWriter struct {
	log        *slog.Logger
	queue      chan usageWrite
	timeout    time.Duration // of the caller's attempt
	backoff    time.Duration
	maxBackoff time.Duration
	drainFor   time.Duration
	// pending counts the usages queued or being retried: while any are,
	// new usages join the queue directly (the ledger is failing; waiting
	// recordTimeout on every request would only slow them).
	pending atomic.Int64

	mu      sync.RWMutex // held to read stopped and queue as one
	stopped bool         // run has ended: nothing drains the queue
}

func newUsageWriter(log *slog.Logger, capacity int) *usageWriter {
	return &usageWriter{log: log, queue: make(chan usageWrite, capacity), timeout: recordTimeout,
		backoff: writerBackoff, maxBackoff: writerMaxBackoff, drainFor: writerDrain}
}

// write records u with ev through rec, or queues it for the writer.
func (w *usageWriter) write(ctx context.Context, rec ledger.Recorder, u ledger.Usage, ev ledger.Event) {
	it := usageWrite{rec: rec, u: u, ev: ev}
	var err error
	if w.pending.Load() == 0 {
		if err = w.try(ctx, it, w.timeout); err == nil || w.refused(ctx, it, err) {
			return
		}
	}
	w.mu.RLock()
	defer w.mu.RUnlock()
	if !w.stopped {
		w.pending.Add(1)
		select {
		case w.queue <- it:
			return
		default:
			w.pending.Add(-1)
		}
	}
	w.lost(ctx, it, err, "the ledger writer's queue is full or stopped")
}

// try makes one attempt within timeout, whether or not ctx ends.
func (w *usageWriter) try(ctx context.Context, it usageWrite, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), timeout)
	defer cancel()
	_, err := it.rec.RecordUsage(ctx, it.u, it.ev)
	return err
}

// refused reports (and logs) a failure that trying again cannot mend:
// the ledger found the usage invalid or conflicting.
func (w *usageWriter) refused(ctx context.Context, it usageWrite, err error) bool {
	if !errors.Is(err, ledger.ErrInvalid) && !errors.Is(err, ledger.ErrConflict) {
		return false
	}
	w.lost(ctx, it, err, "the ledger refused it")
	return true
}

func (w *usageWriter) lost(ctx context.Context, it usageWrite, err error, why string) {
	attrs := []slog.Attr{slog.String("usage_id", it.u.ID), slog.String("kind", string(it.u.Kind)),
		slog.Int64("actual", it.u.Actual), slog.String("why", why)}
	if err != nil {
		attrs = append(attrs, slog.String(serve.KeyError, err.Error()))
	}
	w.log.LogAttrs(ctx, slog.LevelError, "ledger: usage not recorded", attrs...)
}

// run drains the queue until ctx ends, retrying each usage with backoff
// until it is recorded (or refused); then it tries what is left once
// each within drainFor, and logs the rest as not recorded.
func (w *usageWriter) run(ctx context.Context) error {
	for ctx.Err() == nil {
		select {
		case <-ctx.Done():
		case it := <-w.queue:
			if !w.retry(ctx, it) {
				w.drain(it)
				return nil
			}
			w.pending.Add(-1)
		}
	}
	w.drain()
	return nil
}

// retry writes it until recorded or refused (true), or ctx ends (false).
func (w *usageWriter) retry(ctx context.Context, it usageWrite) bool {
	delay := w.backoff
	for {
		err := w.try(ctx, it, writerTimeout)
		if err == nil || w.refused(ctx, it, err) {
			return true
		}
		if sleepCtx(ctx, jitter(delay)) != nil {
			return false
		}
		delay = min(2*delay, w.maxBackoff)
	}
}

// drain stops the writer and tries held and the queued usages once each
// within drainFor; what is not recorded is logged.
func (w *usageWriter) drain(held ...usageWrite) {
	w.mu.Lock()
	w.stopped = true
	w.mu.Unlock()
	close(w.queue) // no write sends after stopped
	ctx, cancel := context.WithTimeout(context.Background(), w.drainFor)
	defer cancel()
	for it := range w.queue {
		held = append(held, it)
	}
	for _, it := range held {
		err := ctx.Err()
		if err == nil {
			err = w.try(ctx, it, min(writerTimeout, w.drainFor))
		}
		if err != nil && !w.refused(ctx, it, err) {
			w.lost(ctx, it, err, "still failing when the service stopped")
		}
		w.pending.Add(-1)
	}
}

// purchaseEvent is the outbox event of saga s reaching status (with
// reason) at at: ledger.NewPurchaseEvent of the saga as that step leaves
// it.
func purchaseEvent(id string, s ledger.Saga, status ledger.Status, reason string, at time.Time) ledger.Event {
	s.Status, s.Reason, s.UpdatedAt = status, reason, at
	return ledger.NewPurchaseEvent(id, s)
}
