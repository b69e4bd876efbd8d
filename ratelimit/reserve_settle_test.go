package ratelimit

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/leakytokens/leaky/ratelimit/ledger"
	"github.com/leakytokens/leaky/ratelimit/store"
)

// lostReplies applies every Adjust on the embedded store but reports the
// first lost ones as timed out, as a reply that missed its caller's
// deadline.
type lostReplies struct {
	sharedStore
	mu   sync.Mutex
	lose int // replies still to lose
	runs int // Adjust calls
}

func (l *lostReplies) Adjust(ctx context.Context, adj []store.Adjustment) error {
	err := l.sharedStore.Adjust(ctx, adj)
	l.mu.Lock()
	defer l.mu.Unlock()
	l.runs++
	if err == nil && l.lose > 0 {
		l.lose--
		return context.DeadlineExceeded
	}
	return err
}

// A settle whose Adjust ran but whose reply was lost is tried again, and
// the retry is a no-op (the Once keys): the refund is applied exactly once
// and recorded at the actual usage, on a local and on a shared ledger.
func TestSettleWithLostReplyAppliesOnce(t *testing.T) {
	for _, shared := range []bool{false, true} {
		clk := &clock{us: 1_700_000_000_000_000}
		st := &lostReplies{sharedStore: newSharedStore(clk.micros), lose: 2}
		var backing store.Store = st
		if !shared {
			backing = struct{ store.Store }{st} // hides the Reserver: the map ledger
		}
		rs := NewReservations(backing, clk.time, nil)
		var rec recorder
		rs.SetRecorder(rec.record)
		it := bucket(t, "u", 100, 1, 50)
		res, dec, err := rs.Reserve(context.Background(), []store.Item{it}, time.Minute)
		if err != nil || !dec.Allowed {
			t.Fatalf("shared %v: Reserve = %+v, %v", shared, dec, err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		sett, err := rs.Settle(ctx, res.ID, 40, ledger.KindConsume)
		cancel()
		if err != nil || sett.Actual != 40 {
			t.Errorf("shared %v: Settle(40) = actual %d, %v; want 40, nil", shared, sett.Actual, err)
		}
		if got := remainingOf(t, st.Memory, it); got != 60 {
			t.Errorf("shared %v: remaining after the settle = %d, want 60 (refunded 10 once)", shared, got)
		}
		if st.runs != 3 {
			t.Errorf("shared %v: Adjust ran %d times, want 3 (two lost replies, then the answer)", shared, st.runs)
		}
		if sts := rec.all(); len(sts) != 1 || sts[0].Actual != 40 {
			t.Errorf("shared %v: recorded %+v, want one settlement at 40", shared, sts)
		}
	}
}
