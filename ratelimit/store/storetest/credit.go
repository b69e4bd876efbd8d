package storetest

import (
	"context"
	"errors"

	"github.com/google/go-cmp/cmp"

	"github.com/leakytokens/leaky/ratelimit/store"
)

// creditCases are the contract's cases for purchase credits (Adjustment
// with Once) and the seeds that already count some of them.
var creditCases = []struct {
	name string
	run  func(*env)
}{
	{"QuotaSeedMarksPendingCredits", testQuotaSeedMarksOnce},
	{"QuotaSeedOverStateMarksNothing", testQuotaSeedOverState},
	{"QuotaCreditCreatesWindow", testQuotaCreditCreatesWindow},
	{"QuotaCreditRacingSeed", testQuotaCreditRacingSeed},
	{"QuotaStaleSeedOverBalance", testQuotaStaleSeedOverBalance},
}

// gens is the seed generations of items' pools.
func (e *env) gens(items ...store.Item) []int64 {
	e.t.Helper()
	g, err := e.st.(store.Seeder).Generations(context.Background(), items)
	if err != nil {
		e.t.Fatalf("Generations: %v", err)
	}
	return g
}

// testQuotaCreditRacingSeed: a seed reads the generation and the ledger
// (no purchase yet); a purchase's credit, and a window-only one, find the
// pool unseeded: neither applies nor sets its Once key, each raises the
// generation; the seed from the stale read is refused and sets nothing.
// The seed from a fresh read (the purchases counted, one still pending)
// applies; the pending credit retried is a no-op, the other is not.
func testQuotaCreditRacingSeed(e *env) {
	it := e.quotaItem("w", "p", 10, 0)
	read := e.gens(it, e.gcraItem("g", 1, 1, 0), e.quotaItem("w", "", 10, 0))
	if diff := cmp.Diff([]int64{0, 0, 0}, read); diff != "" {
		e.t.Errorf("generations of fresh pools (-want +got):\n%s", diff)
	}
	credit := store.Adjustment{Item: e.balanceItem("p"), Delta: -20, Once: e.key("saga-1")}
	window := store.Adjustment{Item: it, Delta: -5, Once: e.key("saga-2")}
	e.adjust(credit, window)
	err := e.st.(store.Seeder).Seed(context.Background(), []store.Seed{{Item: it, Purchased: 0, Generation: read[0]}})
	if !errors.Is(err, store.ErrStaleSeed) {
		e.t.Fatalf("Seed under a stale generation = %v, want ErrStaleSeed", err)
	}
	if _, err := e.st.Decide(context.Background(), []store.Item{it}); !errors.Is(err, store.ErrUnseeded) {
		e.t.Fatalf("Decide after a refused seed = %v, want ErrUnseeded", err)
	}
	fresh := e.gens(it)
	if fresh[0] == read[0] {
		e.t.Fatalf("generation after credits on an unseeded pool = %d, want a change", fresh[0])
	}
	e.seed(store.Seed{Item: it, Used: -5, Purchased: 20, WindowOnce: []string{e.key("saga-2")}, Generation: fresh[0]})
	e.expect(one(qok(35, 0)), it)
	e.adjust(credit, window)
	e.expect(one(qok(55, 0)), it)
}

// testQuotaStaleSeedOverBalance: a seed whose balance is there already
// creates nothing, so a changed generation does not refuse it (its window
// counter is set).
func testQuotaStaleSeedOverBalance(e *env) {
	it := e.quotaItem("w", "p", 10, 0)
	e.adjust(store.Adjustment{Item: e.balanceItem("p"), Delta: -1, Once: e.key("saga-1")})
	e.seed(store.Seed{Item: it, Purchased: 1, Generation: e.gens(it)[0]})
	e.seed(store.Seed{Item: e.quotaItem("w2", "p", 10, 0), Used: 4, Purchased: 50})
	e.expect(one(qok(7, 0)), e.quotaItem("w2", "p", 10, 0))
}

// testQuotaSeedMarksOnce: a seed whose balance and window counter count
// two credits still to come marks their Once keys applied when it
// creates them: the credits that follow are no-ops; another one applies.
func testQuotaSeedMarksOnce(e *env) {
	it := e.quotaItem("w", "p", 10, 0)
	e.seed(store.Seed{Item: it, Used: -5, Purchased: 20,
		Once: []string{e.key("saga-p")}, WindowOnce: []string{e.key("saga-w")}})
	e.expect(one(qok(35, 0)), it)
	e.adjust(store.Adjustment{Item: e.balanceItem("p"), Delta: -20, Once: e.key("saga-p")},
		store.Adjustment{Item: it, Delta: -5, Once: e.key("saga-w")})
	e.expect(one(qok(35, 0)), it)
	e.adjust(store.Adjustment{Item: e.balanceItem("p"), Delta: -1, Once: e.key("saga-other")})
	e.expect(one(qok(36, 0)), it)
}

// testQuotaSeedOverState: a seed that finds the balance and the counter
// there marks nothing (they did not count its credits): the credits
// apply.
func testQuotaSeedOverState(e *env) {
	it := e.quotaItem("w", "p", 10, 0)
	e.seed(store.Seed{Item: it, Purchased: 1})
	e.seed(store.Seed{Item: it, Used: -5, Purchased: 21,
		Once: []string{e.key("saga-p")}, WindowOnce: []string{e.key("saga-w")}})
	e.expect(one(qok(11, 0)), it)
	e.adjust(store.Adjustment{Item: e.balanceItem("p"), Delta: -20, Once: e.key("saga-p")},
		store.Adjustment{Item: it, Delta: -5, Once: e.key("saga-w")})
	e.expect(one(qok(36, 0)), it)
}

// testQuotaCreditCreatesWindow: a window-only purchase's credit (Once
// set) on a window with no counter yet creates it; a refund without Once
// to a counter that is not there creates nothing; neither touches an
// unseeded pool.
func testQuotaCreditCreatesWindow(e *env) {
	e.seed(store.Seed{Item: e.quotaItem("yesterday", "p", 10, 0), Purchased: 2})
	e.expect(one(qok(7, 0)), e.quotaItem("yesterday", "p", 10, 5))
	today := e.quotaItem("today", "p", 10, 0)
	e.adjust(store.Adjustment{Item: today, Delta: -30, Once: e.key("saga-1")})
	e.expect(one(qok(42, 0)), today)
	e.expect(one(qok(32, 0)), e.quotaItem("today", "p", 10, 10))
	e.adjust(store.Adjustment{Item: e.quotaItem("other", "p", 10, 0), Delta: -30})
	e.expect(one(qok(12, 0)), e.quotaItem("other", "p", 10, 0))
	e.adjust(store.Adjustment{Item: e.quotaItem("w", "unseeded", 10, 0), Delta: -30, Once: e.key("saga-2")})
	e.seed(store.Seed{Item: e.quotaItem("w", "unseeded", 10, 0), Generation: e.gens(e.quotaItem("w", "unseeded", 10, 0))[0]})
	e.expect(one(qok(10, 0)), e.quotaItem("w", "unseeded", 10, 0))
}
