package ratelimit

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/leakytokens/leaky/internal/contract"
	"github.com/leakytokens/leaky/ratelimit/ledger"
	"github.com/leakytokens/leaky/ratelimit/store"
)

// creditPolicy gives free users a daily quota and pro users a monthly one
// in Berlin on openai: two tiers whose windows start at different times.
const creditPolicy = `
quotas:
  time_zone: UTC
  tiers:
    free: {openai: {allowance: 1000, window: day}}
    pro:  {openai: {allowance: 5000, window: month, time_zone: Europe/Berlin}}
`

// creditEnv is a service (not running: its seeding and planning are used)
// on a real store and ledger, and the purchase saga on them.
type creditEnv struct {
	svc *Service
	st  store.Store
	led ledger.Ledger
	p   *purchases
	now time.Time // the service's planning clock
}

func newCreditEnv(t *testing.T, storeKind, ledgerKind string) *creditEnv {
	t.Helper()
	cfg := testConfig(t, storeKind)
	cfg.ConfigPath = examplePolicyWith(t, creditPolicy)
	st := testStore(t, cfg)
	t.Cleanup(func() { closeStore(st) })
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	svc, err := New(cfg, log, st)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	e := &creditEnv{svc: svc, st: st, led: newLedger(t, ledgerKind), now: time.Now()}
	svc.SetLedger(e.led)
	svc.now = func() time.Time { return e.now }
	a := &tokenAPI{s: svc}
	e.p = &purchases{ledger: func() ledgerSagas { return e.led }, credit: st, windowCredit: a.windowCredit, log: log,
		now: func() time.Time { return e.now }, staleAfter: time.Minute, interval: time.Second}
	return e
}

// plan is the quota of user (tier) on openai at the service's clock.
func (e *creditEnv) plan(user, tier string, hits int64) *quotaPlan {
	return planQuota(e.svc.limits.Load().policy, contract.Descriptor{Scope: contract.ScopeUser, Provider: "openai", Tier: tier, User: user}, hits, e.now)
}

// consume decides q's item as the rate-limit path does: an unseeded pool
// is rebuilt from the ledger first. It returns the item's Remaining.
func (e *creditEnv) consume(t *testing.T, q *quotaPlan) int64 {
	t.Helper()
	ctx := context.Background()
	items := []store.Item{q.item}
	dec, err := e.svc.decideSeeded(ctx, items, []*quotaPlan{q}, func() (store.Decision, error) { return e.st.Decide(ctx, items) })
	if err != nil || !dec.Allowed {
		t.Fatalf("consume %d of %s: %+v, %v", q.item.Hits, q.item.Key, dec, err)
	}
	return dec.Results[0].Remaining
}

// allocate starts saga s and moves it to TOKENS_ALLOCATED in the ledger
// only: a crash before the fast path's credit.
func (e *creditEnv) allocate(t *testing.T, s ledger.Saga) ledger.Saga {
	t.Helper()
	ctx := context.Background()
	s.Status, s.CreatedAt = ledger.StatusStarted, e.now
	got, _, err := e.led.StartSaga(ctx, s, purchaseEvent(ledger.NewID(), s, ledger.StatusStarted, "", e.now))
	if err != nil {
		t.Fatal(err)
	}
	for _, to := range []ledger.Status{ledger.StatusPaymentReserved, ledger.StatusTokensAllocated} {
		if got, err = e.led.StepSaga(ctx, s.ID, got.Status, to, "", purchaseEvent(ledger.NewID(), s, to, "", e.now)); err != nil {
			t.Fatal(err)
		}
	}
	return got
}

// recoverAll runs the recovery job once the sagas are stale and checks
// that it completed n of them.
func (e *creditEnv) recoverAll(t *testing.T, n int) {
	t.Helper()
	p := *e.p
	p.now = func() time.Time { return e.now.Add(2 * p.staleAfter) }
	if got, err := p.recoverStale(context.Background()); err != nil || got != n {
		t.Fatalf("recovered %d, %v; want %d", got, err, n)
	}
}

var creditStoreKinds = []string{"memory", "redis"}

// A crash after TOKENS_ALLOCATED, a consume that rebuilds the pool from
// the ledger (the store has no state for it: never seeded, or Redis lost
// its data), then recovery: the purchase is in the balance once.
func TestSagaCreditAfterRebuild(t *testing.T) {
	for _, sk := range creditStoreKinds {
		for _, lk := range ledgerKinds {
			t.Run(sk+"/"+lk, func(t *testing.T) {
				e := newCreditEnv(t, sk, lk)
				user := uuid.NewString()
				q := e.plan(user, "free", 10)
				e.allocate(t, ledger.Saga{ID: uuid.NewString(), UserID: user, Pool: q.pool, Tokens: 500})
				if got := e.consume(t, q); got != 1000-10+500 {
					t.Fatalf("after the rebuild: remaining %d, want %d", got, 1000-10+500)
				}
				e.recoverAll(t, 1)
				if got := e.consume(t, e.plan(user, "free", 0)); got != 1000-10+500 {
					t.Fatalf("after recovery: remaining %d, want %d (the purchase counted once)", got, 1000-10+500)
				}
			})
		}
	}
}

// The live saga racing a rebuild: a window-only purchase allocated, the
// pool rebuilt by a consume, then the saga's own credit: counted once.
func TestSagaWindowCreditAfterRebuild(t *testing.T) {
	for _, sk := range creditStoreKinds {
		t.Run(sk, func(t *testing.T) {
			e := newCreditEnv(t, sk, "memory")
			user := uuid.NewString()
			q := e.plan(user, "free", 0)
			s := e.allocate(t, ledger.Saga{ID: uuid.NewString(), UserID: user, Pool: q.pool, Tokens: 300, WindowOnly: true, Window: q.start})
			if got := e.consume(t, q); got != 1300 {
				t.Fatalf("after the rebuild: remaining %d, want 1300", got)
			}
			if got, err := e.p.advance(context.Background(), e.led, s); err != nil || got.Status != ledger.StatusCompleted {
				t.Fatalf("advance: %+v, %v", got, err)
			}
			if got := e.consume(t, q); got != 1300 {
				t.Fatalf("after the credit: remaining %d, want 1300 (counted once)", got)
			}
		})
	}
}

// A pool used yesterday; today, before any consume, a window-only
// purchase: today's window has no counter yet, and is credited.
func TestSagaWindowCreditNewWindow(t *testing.T) {
	for _, sk := range creditStoreKinds {
		t.Run(sk, func(t *testing.T) {
			e := newCreditEnv(t, sk, "memory")
			user := uuid.NewString()
			today := e.now
			e.now = today.Add(-24 * time.Hour)
			e.consume(t, e.plan(user, "free", 100))
			e.now = today
			q := e.plan(user, "free", 0)
			s := ledger.Saga{ID: uuid.NewString(), UserID: user, Pool: q.pool, Tokens: 250, WindowOnly: true, Window: q.start}
			if got, err := e.p.start(context.Background(), s); err != nil || got.Status != ledger.StatusCompleted {
				t.Fatalf("purchase: %+v, %v", got, err)
			}
			if got := e.consume(t, q); got != 1000+250 {
				t.Fatalf("today: remaining %d, want %d", got, 1000+250)
			}
		})
	}
}

// A pro user's window-only purchase recovered after a crash (recovery
// knows no tier) is credited to the pro window the saga recorded.
func TestSagaWindowCreditRecoveredProTier(t *testing.T) {
	for _, sk := range creditStoreKinds {
		t.Run(sk, func(t *testing.T) {
			e := newCreditEnv(t, sk, "memory")
			user := uuid.NewString()
			pro := e.plan(user, "pro", 0)
			if free := e.plan(user, "free", 0); free.start.Equal(pro.start) {
				t.Fatalf("the free day and the pro month start together (%v): pick other windows", pro.start)
			}
			e.consume(t, pro) // seeded: the credit is kept by the store
			e.allocate(t, ledger.Saga{ID: uuid.NewString(), UserID: user, Pool: pro.pool, Tokens: 700, WindowOnly: true, Window: pro.start})
			e.recoverAll(t, 1)
			if got := e.consume(t, pro); got != 5000+700 {
				t.Fatalf("pro window: remaining %d, want %d", got, 5000+700)
			}
		})
	}
}
