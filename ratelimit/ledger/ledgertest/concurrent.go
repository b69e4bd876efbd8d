package ledgertest

import (
	"sync"
	"testing"

	"github.com/leakytokens/leaky/ratelimit/ledger"
)

// testConcurrentWrites: many concurrent writes of one usage id record it
// once; many concurrent starts with one user's key create one saga that
// every caller gets; an event id reused is ErrConflict.
func testConcurrentWrites(t *testing.T, l ledger.Ledger) {
	const n = 16
	var wg sync.WaitGroup
	recorded := make(chan bool, n)
	sagas := make(chan ledger.Saga, n)
	created := make(chan bool, n)
	for range n {
		wg.Go(func() {
			u := Usage("same", "u1", "o1", W1, 10, 0)
			ok, err := l.RecordUsage(Ctx(t), u, ledger.NewUsageEvent("", u))
			if err != nil {
				t.Errorf("RecordUsage() = %v", err)
			}
			recorded <- ok
			s := Saga("u1", UserPool("u1"), 5, "buy-once")
			got, c, err := l.StartSaga(Ctx(t), s, ledger.NewPurchaseEvent("", s))
			if err != nil {
				t.Errorf("StartSaga() = %v", err)
			}
			sagas <- got
			created <- c
		})
	}
	wg.Wait()
	close(recorded)
	close(sagas)
	close(created)
	count := func(ch chan bool) (k int) {
		for v := range ch {
			if v {
				k++
			}
		}
		return k
	}
	if k := count(recorded); k != 1 {
		t.Errorf("%d of %d concurrent RecordUsage(same id) returned true, want 1", k, n)
	}
	if k := count(created); k != 1 {
		t.Errorf("%d of %d concurrent StartSaga(same key) created, want 1", k, n)
	}
	ids := map[string]bool{}
	for s := range sagas {
		ids[s.ID] = true
	}
	if len(ids) != 1 {
		t.Errorf("concurrent StartSaga(same key) returned %d sagas, want 1", len(ids))
	}
	if got := quota(t, l, OrgPool("o1"), W1); got != [2]int64{10, 0} {
		t.Errorf("QuotaState(org) = %v, want [10 0]", got)
	}
	if pub := drain(t, l); len(pub) != 2 {
		t.Errorf("published %d events, want 2 (one usage, one saga)", len(pub))
	}
	u := Usage("other", "u1", "", W1, 1, 0)
	ev := record(t, l, u)
	u.ID = "third"
	ok, err := l.RecordUsage(Ctx(t), u, ev)
	if ok {
		t.Error("RecordUsage(event id reused) = true, want false")
	}
	wantErr(t, "RecordUsage(event id reused)", err, ledger.ErrConflict)
	if got := quota(t, l, UserPool("u1"), W1); got != [2]int64{11, 0} {
		t.Errorf("QuotaState(user) after the refused write = %v, want [11 0]", got)
	}
}
