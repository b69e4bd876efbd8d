package storetest

import (
	"context"
	"errors"

	"github.com/google/go-cmp/cmp"

	"github.com/leakytokens/leaky/ratelimit/store"
)

// quotaCases are the contract's cases for the Quota algorithm.
var quotaCases = []struct {
	name string
	run  func(*env)
}{
	{"QuotaWindowThenBalance", testQuotaWindowThenBalance},
	{"QuotaRefusalChargesNothing", testQuotaRefusalChargesNothing},
	{"QuotaRefundSplit", testQuotaRefundSplit},
	{"QuotaDebitBeyondAndCredit", testQuotaDebitBeyondAndCredit},
	{"QuotaOnce", testQuotaOnce},
	{"QuotaSeedOnlyWhereAbsent", testQuotaSeedOnlyWhereAbsent},
	{"QuotaUnseeded", testQuotaUnseeded},
	{"QuotaWithoutBalance", testQuotaWithoutBalance},
	{"QuotaInvalid", testQuotaInvalid},
	{"QuotaExactUnderContention", testQuotaExactUnderContention},
}

// hour is the quota windows' remaining length in the cases: long enough
// that a backend expiring keys in real time keeps them.
const hour = 3600 * second

// quotaItem is a Quota item on window key win of pool (its purchased
// key; "" = none), in e's namespace.
func (e *env) quotaItem(win, pool string, limit, hits int64) store.Item {
	it := store.Item{Key: e.key(win), Algorithm: store.Quota, Limit: limit, Period: hour, Hits: hits}
	if pool != "" {
		it.Purchased = e.key(pool)
	}
	return it
}

// balanceItem is the Quota item that adjusts pool's balance alone.
func (e *env) balanceItem(pool string) store.Item {
	return store.Item{Algorithm: store.Quota, Purchased: e.key(pool)}
}

func (e *env) seed(seeds ...store.Seed) {
	e.t.Helper()
	sd, ok := e.st.(store.Seeder)
	if !ok {
		e.t.Fatalf("%T does not implement store.Seeder", e.st)
	}
	if err := sd.Seed(context.Background(), seeds); err != nil {
		e.t.Fatalf("Seed: %v", err)
	}
}

// qok is an admitted quota result; qno a refused one.
func qok(remaining, fromPurchased int64) store.Result {
	return store.Result{Allowed: true, Remaining: remaining, ResetAfter: hour, FromPurchased: fromPurchased}
}

func qno(remaining, retryAfter int64) store.Result {
	return store.Result{Remaining: remaining, RetryAfter: retryAfter, ResetAfter: hour}
}

func testQuotaWindowThenBalance(e *env) {
	e.seed(store.Seed{Item: e.quotaItem("w", "p", 10, 0), Purchased: 5})
	q := func(hits int64) store.Item { return e.quotaItem("w", "p", 10, hits) }
	e.expect(one(qok(7, 0)), q(8))
	e.expect(one(qok(3, 2)), q(4)) // 2 from the window, 2 from the balance
	e.expect(one(qno(3, hour)), q(4))
	e.expect(one(qok(0, 3)), q(3))
	e.expect(one(qno(0, hour)), q(1))
	e.expect(one(qno(0, -1)), q(11)) // more than a fresh window holds: never
	// The next window starts from zero and shares the (now empty) balance.
	e.expect(one(qok(6, 0)), e.quotaItem("w2", "p", 10, 4))
}

func testQuotaRefusalChargesNothing(e *env) {
	e.seed(store.Seed{Item: e.quotaItem("w", "p", 3, 0), Purchased: 1})
	bucket := e.gcraItem("g", 5, second, 4)
	// The quota refuses: the bucket is reported (and left) untouched.
	e.expect(store.Decision{Results: []store.Result{ok(5, 0), qno(4, -1)}}, bucket, e.quotaItem("w", "p", 3, 5))
	// A refusing bucket leaves the quota alone too.
	e.expect(store.Decision{Results: []store.Result{no(5, -1, 0), qok(4, 0)}}, e.gcraItem("g", 5, second, 6), e.quotaItem("w", "p", 3, 2))
	e.expect(store.Decision{Allowed: true, Results: []store.Result{ok(5, 0), qok(4, 0)}}, e.gcraItem("g", 5, second, 0), e.quotaItem("w", "p", 3, 0))
	// Two pools in one decision: the one that refuses keeps the other
	// uncharged.
	e.seed(store.Seed{Item: e.quotaItem("w2", "p2", 100, 0)})
	e.expect(store.Decision{Results: []store.Result{qok(100, 0), qno(4, -1)}}, e.quotaItem("w2", "p2", 100, 4), e.quotaItem("w", "p", 3, 5))
	e.expect(store.Decision{Allowed: true, Results: []store.Result{qok(96, 0), qok(0, 1)}}, e.quotaItem("w2", "p2", 100, 4), e.quotaItem("w", "p", 3, 4))
}

func testQuotaRefundSplit(e *env) {
	e.seed(store.Seed{Item: e.quotaItem("w", "p", 5, 0), Purchased: 10})
	it := e.quotaItem("w", "p", 5, 8)
	e.expect(one(qok(7, 3)), it)
	// Settled at 2: 6 back, 3 of them to the balance (what it gave), 3 to
	// the window: used 2, balance 10.
	e.adjust(store.Adjustment{Item: it, Delta: -6, ToPurchased: 3})
	e.expect(one(qok(13, 0)), e.quotaItem("w", "p", 5, 0))
	e.expect(one(qok(0, 10)), e.quotaItem("w", "p", 5, 13))
}

func testQuotaDebitBeyondAndCredit(e *env) {
	e.seed(store.Seed{Item: e.quotaItem("w", "p", 5, 0)})
	it := e.quotaItem("w", "p", 5, 5)
	e.expect(one(qok(0, 0)), it)
	// Settled at 9: the window goes 4 beyond its allowance, exactly.
	e.adjust(store.Adjustment{Item: it, Delta: 4})
	e.expect(one(qno(-4, hour)), e.quotaItem("w", "p", 5, 1))
	// A purchase of 10 credits the balance alone.
	e.adjust(store.Adjustment{Item: e.balanceItem("p"), Delta: -10})
	e.expect(one(qok(0, 6)), e.quotaItem("w", "p", 5, 6))
}

func testQuotaOnce(e *env) {
	e.seed(store.Seed{Item: e.quotaItem("w", "p", 5, 0)})
	credit := store.Adjustment{Item: e.balanceItem("p"), Delta: -10, Once: e.key("saga-1")}
	e.adjust(credit)
	e.adjust(credit, credit)
	e.expect(one(qok(15, 0)), e.quotaItem("w", "p", 5, 0))
	other := credit
	other.Once = e.key("saga-2")
	e.adjust(other)
	e.expect(one(qok(25, 0)), e.quotaItem("w", "p", 5, 0))
	// Once applies to any adjustment: a bucket's refund too.
	g := e.gcraItem("g", 5, second, 4)
	e.decide(g)
	refund := store.Adjustment{Item: g, Delta: -2, Once: e.key("r")}
	e.adjust(refund, refund)
	e.expect(one(ok(3, 2*second)), e.gcraItem("g", 5, second, 0))
}

func testQuotaSeedOnlyWhereAbsent(e *env) {
	e.seed(store.Seed{Item: e.quotaItem("w", "p", 10, 0), Used: 3, Purchased: 7})
	e.expect(one(qok(14, 0)), e.quotaItem("w", "p", 10, 0))
	e.seed(store.Seed{Item: e.quotaItem("w", "p", 10, 0), Used: 0, Purchased: 100})
	e.expect(one(qok(12, 0)), e.quotaItem("w", "p", 10, 2))
	e.seed(store.Seed{Item: e.quotaItem("w", "p", 10, 0), Used: 0, Purchased: 100})
	e.expect(one(qok(12, 0)), e.quotaItem("w", "p", 10, 0))
	// A new window of a seeded pool takes the seed's counter, keeps the
	// balance; a used count below zero (window-only credits) is kept.
	e.seed(store.Seed{Item: e.quotaItem("w2", "p", 10, 0), Used: -4, Purchased: 100})
	e.expect(one(qok(21, 0)), e.quotaItem("w2", "p", 10, 0))
}

func testQuotaUnseeded(e *env) {
	e.seed(store.Seed{Item: e.quotaItem("w", "seeded", 10, 0)})
	items := []store.Item{e.gcraItem("g", 5, second, 1), e.quotaItem("w", "seeded", 10, 1), e.quotaItem("w2", "absent", 10, 1), e.quotaItem("w3", "absent2", 10, 0)}
	_, err := e.st.Decide(context.Background(), items)
	var ue *store.UnseededError
	if !errors.Is(err, store.ErrUnseeded) || !errors.As(err, &ue) {
		e.t.Fatalf("Decide with unseeded pools = %v, want an *UnseededError", err)
	}
	if diff := cmp.Diff([]int{2, 3}, ue.Items); diff != "" {
		e.t.Errorf("unseeded items (-want +got):\n%s", diff)
	}
	// Nothing was charged.
	e.expect(store.Decision{Allowed: true, Results: []store.Result{ok(5, 0), qok(10, 0)}}, e.gcraItem("g", 5, second, 0), e.quotaItem("w", "seeded", 10, 0))
	// Adjusting an unseeded pool changes nothing: the ledger has it.
	e.adjust(store.Adjustment{Item: e.balanceItem("absent"), Delta: -50}, store.Adjustment{Item: e.quotaItem("w2", "absent", 10, 1), Delta: 3})
	e.seed(store.Seed{Item: e.quotaItem("w2", "absent", 10, 0), Used: 1, Purchased: 2})
	e.expect(one(qok(11, 0)), e.quotaItem("w2", "absent", 10, 0))
}

func testQuotaWithoutBalance(e *env) {
	it := e.quotaItem("w", "", 3, 2)
	e.expect(one(qok(1, 0)), it)
	e.expect(one(qno(1, hour)), it)
	e.adjust(store.Adjustment{Item: it, Delta: -1})
	e.expect(one(qok(0, 0)), it)
}

func testQuotaInvalid(e *env) {
	tests := []struct {
		name string
		it   store.Item
	}{
		{"no window key in a decision", e.balanceItem("p")},
		{"no key at all", store.Item{Algorithm: store.Quota}},
		{"limit 0", e.quotaItem("w", "p", 0, 1)},
		{"period 0", func() store.Item { it := e.quotaItem("w", "p", 1, 1); it.Period = 0; return it }()},
		{"purchased key too long", func() store.Item {
			it := e.quotaItem("w", "p", 1, 1)
			it.Purchased = string(make([]byte, store.MaxKeyLen+1))
			return it
		}()},
	}
	for _, tc := range tests {
		if _, err := e.st.Decide(context.Background(), []store.Item{tc.it}); !errors.Is(err, store.ErrInvalidItem) {
			e.t.Errorf("%s: Decide = %v, want ErrInvalidItem", tc.name, err)
		}
	}
	if err := e.st.(store.Seeder).Seed(context.Background(), []store.Seed{{Item: e.gcraItem("g", 1, 1, 0)}}); !errors.Is(err, store.ErrInvalidItem) {
		e.t.Errorf("Seed of a GCRA item = %v, want ErrInvalidItem", err)
	}
}

func testQuotaExactUnderContention(e *env) {
	e.seed(store.Seed{Item: e.quotaItem("w", "p", 50, 0), Purchased: 30})
	items := []store.Item{e.gcraItem("g", 1000, hour, 1), e.quotaItem("w", "p", 50, 1)}
	if got := hammer(e, []store.Store{e.st}, 10, items...); got != 80 {
		e.t.Errorf("64 goroutines × 10 requests, allowance 50 + balance 30: admitted %d, want exactly 80", got)
	}
	e.expect(store.Decision{Results: []store.Result{ok(920, 80*hour), qno(0, hour)}}, items...)
}
