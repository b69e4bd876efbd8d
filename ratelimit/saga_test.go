package ratelimit

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/leakytokens/leaky/internal/contract"
	providersstub "github.com/leakytokens/leaky/providers-stub"
	"github.com/leakytokens/leaky/ratelimit/ledger"
	"github.com/leakytokens/leaky/ratelimit/rules"
	"github.com/leakytokens/leaky/ratelimit/store"
)

// purchasePolicy gives the free tier a daily quota on openai only and
// organisations a monthly one on gemini only, so a purchase's credit is
// read through the planned quota item and qwen has no window to buy.
const purchasePolicy = `
quotas:
  time_zone: UTC
  tiers:
    free: {openai: {allowance: 1000, window: day}}
  organisations: {gemini: {allowance: 5000, window: month}}
`

// startPurchases starts the service on a real ledger of kind with
// purchasePolicy; mutate adjusts its config.
func startPurchases(t *testing.T, led ledger.Ledger, mutate func(*Config)) *tokensEnv {
	t.Helper()
	dir := examplePolicyWith(t, purchasePolicy)
	return startTokensOn(t, led, providersstub.Knobs{}, func(c *Config) {
		c.ConfigPath = dir
		if mutate != nil {
			mutate(c)
		}
	})
}

func userPool(user, provider string) ledger.Pool {
	return ledger.Pool{Scope: string(contract.ScopeUser), Subject: user, Provider: provider}
}

// wantBalance fails unless pool's purchased balance is want both in the
// store and in the ledger.
func (e *tokensEnv) wantBalance(t *testing.T, what string, pool ledger.Pool, want int64) {
	t.Helper()
	if fast, durable := e.balance(t, pool, ""); fast != want || durable != want {
		t.Fatalf("%s: balance %d in the store, %d in the ledger; want %d", what, fast, durable, want)
	}
}

func TestTokensPurchase(t *testing.T) {
	for _, kind := range ledgerKinds {
		t.Run(kind, func(t *testing.T) { testTokensPurchase(t, kind) })
	}
}

func testTokensPurchase(t *testing.T, kind string) {
	e := startPurchases(t, newLedger(t, kind), nil)
	user := uuid.NewString()
	tok := e.token(t, user, []string{"USER"}, "acme")
	pool, orgPool := userPool(user, "openai"), ledger.Pool{Scope: string(contract.ScopeOrg), Subject: "acme", Provider: "gemini"}
	e.seedPool(t, pool, "")
	e.seedPool(t, orgPool, "")
	body := `{"userId":"` + user + `","provider":"openai","tokens":5000}`
	a := e.do(t, "POST", "/api/v1/tokens/purchase", tok, body, "Idempotency-Key", " k1 ")
	m := a.json(t)
	id, _ := m["sagaId"].(string)
	if a.status != 202 || m["status"] != "COMPLETED" || id == "" || m["createdAt"] == nil {
		t.Fatalf("purchase: %d %s", a.status, a.body)
	}
	e.wantBalance(t, "fast path", pool, 5000)
	// Replay: the same saga, credited once.
	a = e.do(t, "POST", "/api/v1/tokens/purchase", tok, body, "Idempotency-Key", "k1")
	if m := a.json(t); a.status != 202 || m["sagaId"] != id || m["status"] != "COMPLETED" {
		t.Fatalf("replay: %d %s", a.status, a.body)
	}
	e.wantBalance(t, "replay", pool, 5000)
	// Same key, another payload: 409, nothing credited.
	a = e.do(t, "POST", "/api/v1/tokens/purchase", tok, `{"userId":"`+user+`","provider":"openai","tokens":6000}`, "Idempotency-Key", "k1")
	if a.status != 409 {
		t.Fatalf("conflict: %d %s", a.status, a.body)
	}
	e.wantBalance(t, "conflict", pool, 5000)
	e.checkPurchaseReaders(t, id, tok)
	// An organisation's pool; malformed purchases.
	a = e.do(t, "POST", "/api/v1/tokens/purchase", tok, `{"userId":"`+user+`","orgId":"acme","provider":"gemini","tokens":7}`)
	if a.status != 202 {
		t.Fatalf("org purchase: %d %s", a.status, a.body)
	}
	e.wantBalance(t, "org purchase", orgPool, 7)
	for _, b := range []string{
		`{"userId":"` + user + `","provider":"openai"}`,
		`{"userId":"` + user + `","provider":"openai","tokens":0}`,
		`{"userId":"` + user + `","provider":"openai","tokens":1000001}`,
		`{"userId":"` + user + `","provider":"openai","tokens":"5"}`,
		`{"userId":"` + user + `","tokens":5}`,
		`{"userId":"` + user + `","provider":"qwen","tokens":5,"windowOnly":true}`, // no quota window for qwen
		`{"userId":"` + uuid.NewString() + `","provider":"openai","tokens":5}`,
		`{"userId":"` + user + `","orgId":"globex","provider":"openai","tokens":5}`,
	} {
		if a := e.do(t, "POST", "/api/v1/tokens/purchase", tok, b); a.status != 400 && a.status != 403 {
			t.Errorf("%s: %d %s, want 400 or 403", b, a.status, a.body)
		}
	}
	e.wantBalance(t, "after refused purchases", pool, 5000)
}

// checkPurchaseReaders: saga id (5000 tokens, COMPLETED) is shown to its
// buyer (token tok) and to an ADMIN, and to nobody else.
func (e *tokensEnv) checkPurchaseReaders(t *testing.T, id, tok string) {
	t.Helper()
	if a := e.do(t, "GET", "/api/v1/tokens/purchase/"+id, tok, ""); a.status != 200 || a.json(t)["tokens"] != float64(5000) || a.json(t)["status"] != "COMPLETED" {
		t.Fatalf("buyer GET: %d %s", a.status, a.body)
	}
	if a := e.do(t, "GET", "/api/v1/tokens/purchase/"+id, e.token(t, uuid.NewString(), []string{"ADMIN"}), ""); a.status != 200 {
		t.Fatalf("admin GET: %d %s", a.status, a.body)
	}
	for _, c := range []struct {
		path, tok string
		status    int
	}{
		{"/api/v1/tokens/purchase/" + id, e.token(t, uuid.NewString(), []string{"USER"}), 404},
		{"/api/v1/tokens/purchase/" + uuid.NewString(), tok, 404},
		{"/api/v1/tokens/purchase/not-a-uuid", tok, 400},
		{"/api/v1/tokens/purchase/" + id, "", 401},
	} {
		if a := e.do(t, "GET", c.path, c.tok, ""); a.status != c.status {
			t.Errorf("GET %s: %d %s, want %d", c.path, a.status, a.body, c.status)
		}
	}
}

func TestTokensPurchaseSimulatedFailure(t *testing.T) {
	for _, kind := range ledgerKinds {
		t.Run(kind, func(t *testing.T) {
			e := startPurchases(t, newLedger(t, kind), func(c *Config) { c.Tokens.SagaSimulateFailure = true })
			user := uuid.NewString()
			tok := e.token(t, user, []string{"USER"})
			e.seedPool(t, userPool(user, "openai"), "")
			a := e.do(t, "POST", "/api/v1/tokens/purchase", tok, `{"userId":"`+user+`","provider":"openai","tokens":10}`)
			m := a.json(t)
			if a.status != 202 || m["status"] != "FAILED" {
				t.Fatalf("purchase: %d %s", a.status, a.body)
			}
			e.wantBalance(t, "a failed purchase", userPool(user, "openai"), 0)
			a = e.do(t, "GET", "/api/v1/tokens/purchase/"+m["sagaId"].(string), tok, "")
			if got := a.json(t); a.status != 200 || got["status"] != "FAILED" || got["reason"] == nil || got["reason"] == "" {
				t.Fatalf("saga: %d %s, want FAILED with its reason", a.status, a.body)
			}
		})
	}
}

// A ledger write that fails: before the saga starts the purchase is 503
// and nothing exists; after, the saga is left where it was (202 with that
// status) for the recovery job, which compensates it.
func TestTokensPurchaseLedgerDown(t *testing.T) {
	for _, kind := range ledgerKinds {
		t.Run(kind, func(t *testing.T) {
			led := &flakyLedger{Ledger: newLedger(t, kind)}
			e := startPurchases(t, led, nil)
			user := uuid.NewString()
			tok, pool := e.token(t, user, []string{"USER"}), userPool(user, "openai")
			e.seedPool(t, pool, "")
			body := `{"userId":"` + user + `","provider":"openai","tokens":10}`
			led.failStarts.Store(1)
			if a := e.do(t, "POST", "/api/v1/tokens/purchase", tok, body, "Idempotency-Key", "k"); a.status != 503 || a.header.Get("Retry-After") == "" {
				t.Fatalf("ledger down at start: %d %s", a.status, a.body)
			}
			led.failSteps.Store(1)
			a := e.do(t, "POST", "/api/v1/tokens/purchase", tok, body, "Idempotency-Key", "k")
			m := a.json(t)
			if a.status != 202 || m["status"] != string(ledger.StatusStarted) {
				t.Fatalf("ledger down at a step: %d %s, want 202 STARTED", a.status, a.body)
			}
			e.wantBalance(t, "a purchase left STARTED", pool, 0)
			p := *e.svc.tokens.sagas
			p.now = func() time.Time { return time.Now().Add(2 * p.staleAfter) }
			if n, err := p.recoverStale(context.Background()); err != nil || n != 1 {
				t.Fatalf("recovered %d, %v; want 1", n, err)
			}
			a = e.do(t, "GET", "/api/v1/tokens/purchase/"+m["sagaId"].(string), tok, "")
			if got := a.json(t); got["status"] != string(ledger.StatusFailed) {
				t.Fatalf("after recovery: %d %s, want FAILED", a.status, a.body)
			}
			e.wantBalance(t, "a compensated purchase", pool, 0)
		})
	}
}

// A crash between any two steps leaves a saga that recovery finishes
// (TOKENS_ALLOCATED: credited exactly once, even recovered twice) or
// compensates (STARTED, PAYMENT_RESERVED).
func TestSagaRecovery(t *testing.T) {
	for _, kind := range ledgerKinds {
		for _, c := range []struct {
			left ledger.Status
			want ledger.Status
		}{
			{ledger.StatusStarted, ledger.StatusFailed},
			{ledger.StatusPaymentReserved, ledger.StatusFailed},
			{ledger.StatusTokensAllocated, ledger.StatusCompleted},
		} {
			t.Run(kind+"/"+string(c.left), func(t *testing.T) { testSagaRecovery(t, kind, c.left, c.want) })
		}
	}
}

func testSagaRecovery(t *testing.T, kind string, left, want ledger.Status) {
	led := newLedger(t, kind)
	st := &flakyStore{Memory: store.NewMemory(store.MemoryOptions{MaxKeys: 1 << 16})}
	lim, err := loadLimits(examplePolicyWith(t, purchasePolicy), rules.Options{})
	if err != nil {
		t.Fatal(err)
	}
	user, now := uuid.NewString(), time.Now()
	q := planQuota(lim.policy, contract.Descriptor{Scope: contract.ScopeUser, Provider: "openai", Tier: "free", User: user}, 0, now)
	ctx := context.Background()
	if err := st.Seed(ctx, []store.Seed{{Item: q.item}}); err != nil {
		t.Fatal(err)
	}
	p := &purchases{ledger: func() ledgerSagas { return led }, credit: st, log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		now: func() time.Time { return now }, staleAfter: time.Minute, interval: time.Second}
	s := ledger.Saga{ID: uuid.NewString(), UserID: user, Tokens: 42, CreatedAt: now, Pool: q.pool}
	if _, _, err := led.StartSaga(ctx, s, purchaseEvent(ledger.NewID(), s, ledger.StatusStarted, "", now)); err != nil {
		t.Fatal(err)
	}
	// Drive the ledger to the middle status, as a crash would leave it.
	for from, to := ledger.StatusStarted, ledger.StatusPaymentReserved; from != left; from, to = to, ledger.StatusTokensAllocated {
		if _, err := led.StepSaga(ctx, s.ID, from, to, "", purchaseEvent(ledger.NewID(), s, to, "", now)); err != nil {
			t.Fatal(err)
		}
	}
	if n, err := p.recoverStale(ctx); err != nil || n != 0 {
		t.Fatalf("fresh saga recovered: %d %v", n, err)
	}
	saga := func() ledger.Saga {
		got, err := led.Saga(ctx, s.ID)
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	now = now.Add(2 * time.Minute)
	if left == ledger.StatusTokensAllocated {
		st.failAdjust.Store(1) // the first recovery's credit fails: the saga waits
		if n, _ := p.recoverStale(ctx); n != 0 || saga().Status != left {
			t.Fatalf("recovered %d with the store down: %+v", n, saga())
		}
		if got := storeBalance(t, st, q); got != 0 {
			t.Fatalf("a failed credit left %d in the store", got)
		}
		// A credit applied but not followed by COMPLETED (crash): a
		// second credit with the same Once is not applied again.
		if err := p.creditStore(ctx, saga()); err != nil {
			t.Fatal(err)
		}
	}
	for range 2 {
		if _, err := p.recoverStale(ctx); err != nil {
			t.Fatal(err)
		}
	}
	wantCredit := int64(0)
	if want == ledger.StatusCompleted {
		wantCredit = 42
	}
	got, fast, durable := saga(), storeBalance(t, st, q), ledgerBalance(t, led, q)
	if got.Status != want || fast != wantCredit || durable != wantCredit {
		t.Fatalf("saga %s, credit %d in the store, %d in the ledger; want %s, %d", got.Status, fast, durable, want, wantCredit)
	}
	if want == ledger.StatusFailed && got.Reason == "" {
		t.Fatalf("compensated saga without a reason: %+v", got)
	}
}
