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
)

func TestTokensPurchase(t *testing.T) {
	e := startTokens(t, providersstub.Knobs{}, nil)
	user := uuid.NewString()
	tok := e.token(t, user, []string{"USER"}, "acme")
	body := `{"userId":"` + user + `","provider":"openai","tokens":5000}`
	a := e.do(t, "POST", "/api/v1/tokens/purchase", tok, body, "Idempotency-Key", " k1 ")
	m := a.json(t)
	id, _ := m["sagaId"].(string)
	if a.status != 202 || m["status"] != "COMPLETED" || id == "" || m["createdAt"] == nil {
		t.Fatalf("purchase: %d %s", a.status, a.body)
	}
	balance := contract.PurchasedKey(contract.ScopeUser, user, "openai") + "|"
	if got := e.st.balance(balance); got != 5000 {
		t.Fatalf("fast path credited %d, want 5000", got)
	}
	// Replay: the same saga, credited once.
	a = e.do(t, "POST", "/api/v1/tokens/purchase", tok, body, "Idempotency-Key", "k1")
	if m := a.json(t); a.status != 202 || m["sagaId"] != id || m["status"] != "COMPLETED" {
		t.Fatalf("replay: %d %s", a.status, a.body)
	}
	if got := e.st.balance(balance); got != 5000 {
		t.Fatalf("replay credited again: %d", got)
	}
	// Same key, another payload: 409.
	a = e.do(t, "POST", "/api/v1/tokens/purchase", tok, `{"userId":"`+user+`","provider":"openai","tokens":6000}`, "Idempotency-Key", "k1")
	if a.status != 409 {
		t.Fatalf("conflict: %d %s", a.status, a.body)
	}
	// The buyer and ADMIN see it; another user does not.
	if a := e.do(t, "GET", "/api/v1/tokens/purchase/"+id, tok, ""); a.status != 200 || a.json(t)["tokens"] != float64(5000) {
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
	// An organisation's pool; malformed purchases.
	a = e.do(t, "POST", "/api/v1/tokens/purchase", tok, `{"userId":"`+user+`","orgId":"acme","provider":"gemini","tokens":7}`)
	if a.status != 202 || e.st.balance(contract.PurchasedKey(contract.ScopeOrg, "acme", "gemini")+"|") != 7 {
		t.Fatalf("org purchase: %d %s", a.status, a.body)
	}
	for _, b := range []string{
		`{"userId":"` + user + `","provider":"openai"}`,
		`{"userId":"` + user + `","provider":"openai","tokens":0}`,
		`{"userId":"` + user + `","provider":"openai","tokens":1000001}`,
		`{"userId":"` + user + `","provider":"openai","tokens":"5"}`,
		`{"userId":"` + user + `","tokens":5}`,
		`{"userId":"` + user + `","provider":"openai","tokens":5,"windowOnly":true}`, // no quota window in this policy
		`{"userId":"` + uuid.NewString() + `","provider":"openai","tokens":5}`,
		`{"userId":"` + user + `","orgId":"globex","provider":"openai","tokens":5}`,
	} {
		if a := e.do(t, "POST", "/api/v1/tokens/purchase", tok, b); a.status != 400 && a.status != 403 {
			t.Errorf("%s: %d %s, want 400 or 403", b, a.status, a.body)
		}
	}
}

func TestTokensPurchaseSimulatedFailure(t *testing.T) {
	e := startTokens(t, providersstub.Knobs{}, func(c *Config) { c.Tokens.SagaSimulateFailure = true })
	user := uuid.NewString()
	a := e.do(t, "POST", "/api/v1/tokens/purchase", e.token(t, user, []string{"USER"}), `{"userId":"`+user+`","provider":"openai","tokens":10}`)
	m := a.json(t)
	if a.status != 202 || m["status"] != "FAILED" {
		t.Fatalf("purchase: %d %s", a.status, a.body)
	}
	if got := e.st.balance(contract.PurchasedKey(contract.ScopeUser, user, "openai") + "|"); got != 0 {
		t.Fatalf("a failed purchase credited %d", got)
	}
	e.led.mu.Lock()
	defer e.led.mu.Unlock()
	if s := e.led.sagas[m["sagaId"].(string)]; s.Reason == "" || e.led.credits[s.Pool] != 0 {
		t.Fatalf("saga %+v, credits %v", s, e.led.credits)
	}
}

// A crash between any two steps leaves a saga that recovery finishes
// (TOKENS_ALLOCATED: credited exactly once, even recovered twice) or
// compensates (STARTED, PAYMENT_RESERVED).
func TestSagaRecovery(t *testing.T) {
	for _, c := range []struct {
		left ledger.Status
		want ledger.Status
	}{
		{ledger.StatusStarted, ledger.StatusFailed},
		{ledger.StatusPaymentReserved, ledger.StatusFailed},
		{ledger.StatusTokensAllocated, ledger.StatusCompleted},
	} {
		t.Run(string(c.left), func(t *testing.T) {
			led, st := newFakeLedger(), newCreditStore()
			now := time.Now()
			p := &purchases{ledger: func() ledgerSagas { return led }, credit: st, log: slog.New(slog.NewTextHandler(io.Discard, nil)),
				now: func() time.Time { return now }, staleAfter: time.Minute, interval: time.Second}
			s := ledger.Saga{ID: uuid.NewString(), UserID: "u", Tokens: 42, CreatedAt: now,
				Pool: ledger.Pool{Scope: "user", Subject: "u", Provider: "openai"}}
			ctx := context.Background()
			if _, _, err := led.StartSaga(ctx, s, ledger.Event{}); err != nil {
				t.Fatal(err)
			}
			// Drive the ledger to the middle status, as a crash would leave it.
			for from, to := ledger.StatusStarted, ledger.StatusPaymentReserved; from != c.left; from, to = to, ledger.StatusTokensAllocated {
				if _, err := led.StepSaga(ctx, s.ID, from, to, ""); err != nil {
					t.Fatal(err)
				}
			}
			if n, err := p.recoverStale(ctx); err != nil || n != 0 {
				t.Fatalf("fresh saga recovered: %d %v", n, err)
			}
			now = now.Add(2 * time.Minute)
			if c.left == ledger.StatusTokensAllocated {
				st.fail = 1 // the first recovery's credit fails: the saga waits
				if n, _ := p.recoverStale(ctx); n != 0 || led.saga(s.ID).Status != c.left {
					t.Fatalf("recovered %d with the store down: %+v", n, led.saga(s.ID))
				}
				// A credit applied but not followed by COMPLETED (crash): a
				// second credit with the same Once is not applied again.
				if err := p.creditStore(ctx, led.saga(s.ID), ""); err != nil {
					t.Fatal(err)
				}
			}
			for range 2 {
				if _, err := p.recoverStale(ctx); err != nil {
					t.Fatal(err)
				}
			}
			got := led.saga(s.ID)
			wantCredit := int64(0)
			if c.want == ledger.StatusCompleted {
				wantCredit = 42
			}
			if got.Status != c.want || st.balance(contract.PurchasedKey(contract.ScopeUser, "u", "openai")+"|") != wantCredit {
				t.Fatalf("saga %s, credit %d; want %s, %d", got.Status, st.balance(contract.PurchasedKey(contract.ScopeUser, "u", "openai")+"|"), c.want, wantCredit)
			}
		})
	}
}
