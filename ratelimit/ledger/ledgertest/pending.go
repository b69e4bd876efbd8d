package ledgertest

import (
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/leakytokens/leaky/ratelimit/ledger"
)

// testPendingCredits: QuotaState names the pool's sagas in
// TOKENS_ALLOCATED whose credits it counts, persistent ones in Pending and
// the window's window-only ones in PendingWindow, sorted; a saga that
// completed, failed, is not yet allocated, belongs to another pool or
// credits another window is not named.
func testPendingCredits(t *testing.T, l ledger.Ledger) {
	allocated := func(s ledger.Saga, more ...ledger.Status) ledger.Saga {
		t.Helper()
		got, _ := start(t, l, s)
		return step(t, l, got, "", append([]ledger.Status{ledger.StatusPaymentReserved, ledger.StatusTokensAllocated}, more...)...)
	}
	windowOnly := func(s ledger.Saga) ledger.Saga {
		s.WindowOnly, s.Window = true, W1
		return s
	}
	a := allocated(Saga("u1", UserPool("u1"), 10, ""))
	b := allocated(Saga("u1", UserPool("u1"), 20, ""))
	w := allocated(windowOnly(Saga("u1", UserPool("u1"), 30, "")))
	allocated(Saga("u1", UserPool("u1"), 40, ""), ledger.StatusCompleted)
	allocated(windowOnly(Saga("u1", UserPool("u1"), 50, "")), ledger.StatusCompleted)
	allocated(Saga("u1", UserPool("u1"), 60, ""), ledger.StatusFailed)
	step(t, l, first(start(t, l, Saga("u1", UserPool("u1"), 70, ""))), "", ledger.StatusPaymentReserved)
	allocated(Saga("u2", UserPool("u2"), 80, ""))
	allocated(Saga("u1", OrgPool("u1"), 90, ""))

	ids := []string{a.ID, b.ID}
	slices.Sort(ids)
	want := ledger.QuotaState{Used: -30 - 50, Purchased: 10 + 20 + 40, Pending: ids, PendingWindow: []string{w.ID}}
	if got := quotaState(t, l, UserPool("u1"), W1); !cmp.Equal(got, want, cmpopts.EquateEmpty()) {
		t.Errorf("QuotaState(u1, W1) = %+v, want %+v", got, want)
	}
	want = ledger.QuotaState{Purchased: 10 + 20 + 40, Pending: ids}
	if got := quotaState(t, l, UserPool("u1"), W2); !cmp.Equal(got, want, cmpopts.EquateEmpty()) {
		t.Errorf("QuotaState(u1, W2) = %+v, want %+v", got, want)
	}
	step(t, l, a, "", ledger.StatusCompleted)
	step(t, l, w, "", ledger.StatusCompleted)
	want = ledger.QuotaState{Used: -30 - 50, Purchased: 10 + 20 + 40, Pending: []string{b.ID}}
	if got := quotaState(t, l, UserPool("u1"), W1); !cmp.Equal(got, want, cmpopts.EquateEmpty()) {
		t.Errorf("QuotaState(u1, W1) after completions = %+v, want %+v", got, want)
	}
}

func first[A, B any](a A, _ B) A { return a }
