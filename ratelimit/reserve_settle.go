package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"net"
	"syscall"
	"time"

	"github.com/leakytokens/leaky/ratelimit/store"
)

// A settlement's adjustments carry Once keys derived from the reservation's
// id, so one whose reply was lost (the caller's deadline passed after the
// store applied it) is tried again safely: applied exactly once, never
// twice, never dropped without an error.

// settleOnce is the Adjustment.Once key of a settlement's adjustment of
// item i: the same on every attempt, so a retry is applied at most once.
func settleOnce(id string, i int) string { return fmt.Sprintf("settle:%s:%d", id, i) }

// settleOnceTTL is how long a store keeps a settlement's Once key: past
// every retry of adjustOnce (settleTimeout), not store.OnceTTL's week — a
// key per settled item would pile up.
const settleOnceTTL = time.Minute

// Settle's retries of an adjustment whose answer was lost.
const (
	settleAttempts   = 5
	settleRetryAfter = 20 * time.Millisecond // doubled after each attempt
)

// adjustOnce applies adj (each with its Once key) and, when the call fails
// in a way that may have applied it (a timeout: the reply was lost), tries
// again, up to settleAttempts times within settleTimeout of a context that
// outlives ctx (the caller's deadline is what lost the reply). The Once
// keys make every attempt after the one that applied a no-op: the
// settlement is applied exactly once, or the error is returned. Any other
// failure (a store not reached, ECONNREFUSED, ran nothing) is returned at
// once.
func (r *Reservations) adjustOnce(ctx context.Context, adj []store.Adjustment) error {
	err := r.store.Adjust(ctx, adj)
	if !replyLost(err) {
		return err
	}
	lost := err // that attempt may have been applied
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), settleTimeout)
	defer cancel()
	wait := settleRetryAfter
	for range settleAttempts - 1 {
		t := time.NewTimer(wait)
		select {
		case <-rctx.Done():
			t.Stop()
			return mayHaveRun(err, lost)
		case <-t.C:
		}
		wait *= 2
		if err = r.store.Adjust(rctx, adj); err == nil {
			return nil
		}
	}
	return mayHaveRun(err, lost)
}

// mayHaveRun is the error of a retried adjustment whose first attempt,
// lost, may have been applied: never one that says nothing ran (a later
// ECONNREFUSED), which would have Settle put the reservation back while its
// adjustment may stand.
func mayHaveRun(err, lost error) error {
	if errors.Is(err, syscall.ECONNREFUSED) {
		return fmt.Errorf("%v, after an attempt that may have been applied: %w", err, lost)
	}
	return err
}

// replyLost reports whether err is a call that may have run but whose
// answer did not come: its context ended or its connection timed out.
func replyLost(err error) bool {
	var ne net.Error
	return err != nil && !errors.Is(err, syscall.ECONNREFUSED) &&
		(errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) || (errors.As(err, &ne) && ne.Timeout()))
}
