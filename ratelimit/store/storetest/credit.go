package storetest

import "github.com/leakytokens/leaky/ratelimit/store"

// creditCases are the contract's cases for purchase credits (Adjustment
// with Once) and the seeds that already count some of them.
var creditCases = []struct {
	name string
	run  func(*env)
}{
	{"QuotaSeedMarksPendingCredits", testQuotaSeedMarksOnce},
	{"QuotaSeedOverStateMarksNothing", testQuotaSeedOverState},
	{"QuotaCreditCreatesWindow", testQuotaCreditCreatesWindow},
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
	e.seed(store.Seed{Item: e.quotaItem("w", "unseeded", 10, 0)})
	e.expect(one(qok(10, 0)), e.quotaItem("w", "unseeded", 10, 0))
}
