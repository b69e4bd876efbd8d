package ledgertest

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"

	"github.com/leakytokens/leaky/ratelimit/ledger"
)

var statusOrder = []ledger.Status{ledger.StatusStarted, ledger.StatusPaymentReserved, ledger.StatusTokensAllocated, ledger.StatusCompleted}

// testEventsAfterData: while writers record usages and step sagas, relays
// publish; every event a relay offers has its data visible already (the
// usage counted, the saga at its status or beyond).
func testEventsAfterData(t *testing.T, l ledger.Ledger) {
	const writers, usages, sagas = 4, 15, 5
	var mu sync.Mutex
	seen := map[string]int64{} // usage events published per user
	check := func(ctx context.Context, evs []ledger.Event) error {
		for _, e := range evs {
			if err := visible(ctx, l, e, &mu, seen); err != nil {
				return err
			}
		}
		return nil
	}
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			user := fmt.Sprintf("w%d", w)
			for i := range usages {
				record(t, l, Usage(fmt.Sprintf("%s-%d", user, i), user, "", W1, 1, 0))
				if i%(usages/sagas) == 0 {
					s, _ := start(t, l, Saga(user, UserPool(user), 10, ""))
					step(t, l, s, "", statusOrder[1:]...)
				}
			}
		})
	}
	pub := relayAll(t, l, 4, 3, writers*(usages+sagas*len(statusOrder)), check)
	wg.Wait()
	if want := writers * (usages + sagas*len(statusOrder)); len(pub) != want {
		t.Errorf("published %d events, want %d", len(pub), want)
	}
}

// visible checks that the data of event e is visible: for a usage, that
// its user's pool counts at least the usage events published so far; for
// a purchase, that its saga has reached the event's status.
func visible(ctx context.Context, l ledger.Ledger, e ledger.Event, mu *sync.Mutex, seen map[string]int64) error {
	switch e.Type {
	case ledger.TypeUsage:
		user, err := field(e, "userId")
		if err != nil {
			return err
		}
		mu.Lock()
		seen[user]++
		want := seen[user]
		mu.Unlock()
		st, err := l.QuotaState(ctx, UserPool(user), W1)
		if err != nil {
			return err
		}
		if used := st.Used; used < want {
			return fmt.Errorf("event %s of %s published while its pool counts %d usages, want ≥ %d", e.ID, user, st.Used, want)
		}
	case ledger.TypePurchase:
		id, err := field(e, "sagaId")
		if err != nil {
			return err
		}
		st, err := field(e, "status")
		if err != nil {
			return err
		}
		s, err := l.Saga(ctx, id)
		if err != nil {
			return fmt.Errorf("event %s published before its saga: %w", e.ID, err)
		}
		if slices.Index(statusOrder, s.Status) < slices.Index(statusOrder, ledger.Status(st)) {
			return fmt.Errorf("event %s (%s) published while saga %s is %s", e.ID, st, id, s.Status)
		}
	default:
		return fmt.Errorf("event %s has type %q", e.ID, e.Type)
	}
	return nil
}
