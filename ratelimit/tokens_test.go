package ratelimit

import (
	"context"
	"crypto/rsa"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/google/uuid"

	"github.com/leakytokens/leaky/internal/contract"
	providersstub "github.com/leakytokens/leaky/providers-stub"
	"github.com/leakytokens/leaky/ratelimit/ledger"
	"github.com/leakytokens/leaky/ratelimit/store"
)

// tokensEnv is a running Service with the token API on its HTTP listener,
// a key set it trusts, the memory store, a real ledger and the real
// providers stub.
type tokensEnv struct {
	svc      *Service
	base     string
	led      ledger.Ledger
	st       *store.Memory
	key      *rsa.PrivateKey
	recorded []usageRecord // the usages read from the ledger's outbox so far
}

const testKID = "test-key"

// startTokens starts the service on ledger.Memory; mutate adjusts its
// config (after the stub's URLs are set).
func startTokens(t *testing.T, stub providersstub.Knobs, mutate func(*Config)) *tokensEnv {
	t.Helper()
	return startTokensOn(t, newLedger(t, "memory"), stub, mutate)
}

// startTokensOn starts the service on the ledger led.
func startTokensOn(t *testing.T, led ledger.Ledger, stub providersstub.Knobs, mutate func(*Config)) *tokensEnv {
	t.Helper()
	return startTokensWith(t, led, nil, stub, mutate)
}

// startTokensWith starts the service on the ledger led and on the memory
// store wrap returns around it (nil: the memory store itself).
func startTokensWith(t *testing.T, led ledger.Ledger, wrap func(*store.Memory) store.Store, stub providersstub.Knobs, mutate func(*Config)) *tokensEnv {
	t.Helper()
	key, jwksURL := startJWKS(t)
	cfg := testConfig(t, "memory")
	cfg.ConfigPath = examplePolicyWith(t, "") // no quotas unless the test says so
	cfg.Tokens.JWKSURL = jwksURL
	cfg.Tokens.ProviderURLs = startStub(t, stub)
	if mutate != nil {
		mutate(&cfg)
	}
	st := store.NewMemory(store.MemoryOptions{MaxKeys: 1 << 16})
	var decideOn store.Store = st
	if wrap != nil {
		decideOn = wrap(st)
	}
	svc, err := New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), decideOn)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	svc.SetLedger(led)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- svc.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return &tokensEnv{svc: svc, base: "http://" + svc.HTTPAddr(), led: led, st: st, key: key}
}

// startStub runs the providers stub in-process on free ports and returns
// the providers' base URLs.
func startStub(t *testing.T, knobs providersstub.Knobs) map[string]string {
	t.Helper()
	cfg := providersstub.DefaultConfig()
	cfg.OpenAIAddr, cfg.GeminiAddr, cfg.QwenAddr = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"
	cfg.Knobs = knobs
	cfg.ShutdownGrace = time.Second
	srv, err := providersstub.New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatalf("stub: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	urls := map[string]string{}
	for name, addr := range srv.Addrs() {
		urls[strings.ToLower(name)] = "http://" + addr
	}
	return urls
}

// token signs an access token for user with roles and orgs.
func (e *tokensEnv) token(t *testing.T, user string, roles []string, orgs ...string) string {
	t.Helper()
	tok := jwt.NewWithClaims(jwt.SigningMethodRS256, jwt.MapClaims{
		"iss": "leaky-tokens-auth", "aud": "leaky-tokens", "sub": user, "roles": roles, "orgs": orgs,
		"iat": time.Now().Unix(), "exp": time.Now().Add(time.Hour).Unix(),
	})
	tok.Header["kid"] = testKID
	s, err := tok.SignedString(e.key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

type answer struct {
	status int
	header http.Header
	body   []byte
}

func (a answer) json(t *testing.T) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(a.body, &m); err != nil {
		t.Fatalf("body %q: %v", a.body, err)
	}
	return m
}

// do sends a request with the bearer token tok ("" = none) and headers
// h (name, value pairs).
func (e *tokensEnv) do(t *testing.T, method, path, tok string, body string, h ...string) answer {
	t.Helper()
	req, err := http.NewRequest(method, e.base+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	for i := 0; i+1 < len(h); i += 2 {
		req.Header.Set(h[i], h[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return answer{resp.StatusCode, resp.Header, b}
}

// userRemaining is what the user's openai bucket has left (free tier),
// read without charging.
func (e *tokensEnv) userRemaining(t *testing.T, user string) int64 {
	t.Helper()
	pl := planRequest(e.svc.limits.Load().policy, contract.Request{Provider: "openai", Tier: "free", User: user}, e.svc.clock())
	it := pl[0].item
	it.Hits = 0
	dec, err := e.st.Decide(context.Background(), []store.Item{it})
	if err != nil {
		t.Fatal(err)
	}
	return dec.Results[0].Remaining
}

func TestTokensStatus(t *testing.T) {
	e := startTokens(t, providersstub.Knobs{}, nil)
	a := e.do(t, "GET", "/api/v1/tokens/status", "", "")
	m := a.json(t)
	if a.status != 200 || m["service"] != "token-service" || m["status"] != "ok" || m["timestamp"] == nil {
		t.Fatalf("status: %d %s", a.status, a.body)
	}
	if a := e.do(t, "GET", "/api/v1/tokens/nowhere", "", ""); a.status != 404 || a.json(t)["status"] != float64(404) {
		t.Fatalf("unknown path: %d %s", a.status, a.body)
	}
}

func TestTokensConsumeThroughStub(t *testing.T) {
	e := startTokens(t, providersstub.Knobs{}, nil)
	user := uuid.NewString()
	tok := e.token(t, user, []string{"USER"})
	a := e.do(t, "POST", "/api/v1/tokens/consume", tok, `{"userId":"`+user+`","provider":"openai","tokens":500,"prompt":"hello there, how are you?"}`)
	if a.status != 200 {
		t.Fatalf("consume: %d %s", a.status, a.body)
	}
	m := a.json(t)
	pr, _ := m["providerResponse"].(map[string]any)
	usage, _ := pr["usage"].(map[string]any)
	total, _ := usage["total_tokens"].(float64)
	if m["allowed"] != true || pr["provider"] == nil || total <= 0 || total >= 500 {
		t.Fatalf("answer %s", a.body)
	}
	// Settled at the stub's usage: the bucket lost exactly that.
	want := 4000 - int64(total)
	if got := e.userRemaining(t, user); got < want || got > want+5 { // it leaks 40/s meanwhile
		t.Fatalf("remaining %d, want about %d", got, want)
	}
	if m["capacity"] != float64(4000) || a.header.Get("X-RateLimit-Limit") != "4000" || a.header.Get("RateLimit-Policy") == "" ||
		!strings.HasPrefix(a.header.Get("RateLimit"), `"user";r=`) || m["resetTime"] == nil {
		t.Fatalf("figures: %s %v", a.body, a.header)
	}
	us := e.usages(t)
	if len(us) != 1 || us[0].Actual != int64(total) || us[0].Estimate != 500 || us[0].Kind != ledger.KindConsume {
		t.Fatalf("ledger: %+v", us)
	}
	// Without tokens, the estimate is read from the prompt (and settled at the usage).
	a = e.do(t, "POST", "/api/v1/tokens/consume", tok, `{"userId":"`+user+`","provider":"gemini","messages":[{"role":"user","content":"hi"}]}`)
	if a.status != 200 {
		t.Fatalf("consume estimated: %d %s", a.status, a.body)
	}
}

func TestTokensConsumeRefusedByBucket(t *testing.T) {
	// The stub reports no usage: each consume is settled at its estimate.
	e := startTokens(t, providersstub.Knobs{Usage: providersstub.UsageMissing}, nil)
	user := uuid.NewString()
	tok := e.token(t, user, []string{"USER"})
	body := `{"userId":"` + user + `","provider":"qwen","tokens":1500,"prompt":"x"}`
	if a := e.do(t, "POST", "/api/v1/tokens/consume", tok, body); a.status != 200 {
		t.Fatalf("first: %d %s", a.status, a.body)
	}
	a := e.do(t, "POST", "/api/v1/tokens/consume", tok, body) // 2000 capacity: 1500 does not fit again
	m := a.json(t)
	if a.status != 429 || m["allowed"] != false || a.header.Get("Retry-After") == "" || m["waitSeconds"].(float64) < 1 ||
		a.header.Get("X-RateLimit-Limit") != "2000" || !strings.Contains(a.header.Get("RateLimit"), `"user"`) {
		t.Fatalf("429: %d %s %v", a.status, a.body, a.header)
	}
	if us := e.usages(t); len(us) != 1 || us[0].Actual != 1500 {
		t.Fatalf("ledger: %+v, want one usage settled at the estimate 1500", us)
	}
}

// A consume retried with its Idempotency-Key is answered the first answer
// and charged once; the key with another body is 409.
func TestTokensConsumeIdempotent(t *testing.T) {
	url, calls := fakeProvider(t, func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte(`{"id":"x","usage":{"prompt_tokens":10,"completion_tokens":20,"total_tokens":30}}`))
	})
	e := startTokens(t, providersstub.Knobs{}, func(c *Config) { c.Tokens.ProviderURLs = map[string]string{"openai": url} })
	user := uuid.NewString()
	tok := e.token(t, user, []string{"USER"})
	body := `{"userId":"` + user + `","provider":"openai","tokens":100}`
	first := e.do(t, "POST", "/api/v1/tokens/consume", tok, body, "Idempotency-Key", "c1")
	again := e.do(t, "POST", "/api/v1/tokens/consume", tok, body, "Idempotency-Key", "c1")
	if first.status != 200 || again.status != 200 || string(first.body) != string(again.body) {
		t.Fatalf("replay: %d %s / %d %s", first.status, first.body, again.status, again.body)
	}
	if us := e.usages(t); calls.Load() != 1 || len(us) != 1 {
		t.Fatalf("provider called %d times, %d usages; want 1, 1", calls.Load(), len(us))
	}
	if a := e.do(t, "POST", "/api/v1/tokens/consume", tok, `{"userId":"`+user+`","provider":"openai","tokens":101}`, "Idempotency-Key", "c1"); a.status != 409 {
		t.Fatalf("another body: %d %s", a.status, a.body)
	}
	// Another user's key space is their own.
	other := uuid.NewString()
	if a := e.do(t, "POST", "/api/v1/tokens/consume", e.token(t, other, []string{"USER"}),
		`{"userId":"`+other+`","provider":"openai","tokens":100}`, "Idempotency-Key", "c1"); a.status != 200 || calls.Load() != 2 {
		t.Fatalf("other user: %d %s, %d calls", a.status, a.body, calls.Load())
	}
}

// A consume whose provider fails and whose settle fails too keeps its
// estimate charged: a retry with its Idempotency-Key gets the same answer
// and is charged nothing more.
func TestTokensConsumeIdempotentAfterFailedSettle(t *testing.T) {
	url, calls := fakeProvider(t, func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusInternalServerError) })
	var fs *flakyStore
	e := startTokensWith(t, newLedger(t, "memory"), func(m *store.Memory) store.Store { fs = &flakyStore{Memory: m}; return fs },
		providersstub.Knobs{}, func(c *Config) { c.Tokens.ProviderURLs = map[string]string{"openai": url} })
	user := uuid.NewString()
	tok := e.token(t, user, []string{"USER"})
	before := e.userRemaining(t, user)
	fs.failAdjust.Store(1) // the settle at 0 fails: the estimate stays charged
	body := `{"userId":"` + user + `","provider":"openai","tokens":100}`
	first := e.do(t, "POST", "/api/v1/tokens/consume", tok, body, "Idempotency-Key", "k1")
	n := calls.Load()
	again := e.do(t, "POST", "/api/v1/tokens/consume", tok, body, "Idempotency-Key", "k1")
	if first.status != http.StatusBadGateway || again.status != first.status || string(again.body) != string(first.body) {
		t.Fatalf("first %d %s, retry %d %s; want the same 502 twice", first.status, first.body, again.status, again.body)
	}
	if calls.Load() != n {
		t.Errorf("the retry called the provider again (%d calls, then %d)", n, calls.Load())
	}
	// The bucket leaks 40 tokens a second: one charge of 100 is about 100.
	if charged := before - e.userRemaining(t, user); charged < 50 || charged > 150 {
		t.Errorf("the bucket was charged %d, want the one estimate of 100", charged)
	}
}

// Without quotas in the policy no quota applies: 404 quota not found.
func TestTokensQuotaNotFound(t *testing.T) {
	e := startTokens(t, providersstub.Knobs{}, nil)
	user := uuid.NewString()
	tok := e.token(t, user, []string{"USER"}, "acme")
	for _, c := range []struct {
		path   string
		status int
	}{
		{"/api/v1/tokens/quota?userId=" + user + "&provider=openai", 404},
		{"/api/v1/tokens/quota/org?orgId=acme&provider=openai", 404},
		{"/api/v1/tokens/quota?userId=" + user, 400},
		{"/api/v1/tokens/quota?provider=openai", 400},
		{"/api/v1/tokens/quota?userId=nope&provider=openai", 400},
		{"/api/v1/tokens/quota?userId=" + uuid.NewString() + "&provider=openai", 403},
		{"/api/v1/tokens/quota/org?orgId=globex&provider=openai", 403},
		{"/api/v1/tokens/quota/org?provider=openai", 400},
	} {
		if a := e.do(t, "GET", c.path, tok, ""); a.status != c.status || a.json(t)["status"] != float64(c.status) {
			t.Errorf("GET %s: %d %s, want %d", c.path, a.status, a.body, c.status)
		}
	}
}

// A consume whose client hangs up while the provider works still
// completes: it is settled at the provider's usage (the provider did the
// work) and recorded so, and however many clients hang up the provider's
// circuit stays closed.
func TestTokensConsumeClientHangsUp(t *testing.T) {
	entered := make(chan struct{}, 1)
	url, _ := fakeProvider(t, func(w http.ResponseWriter, r *http.Request) {
		entered <- struct{}{}
		// Work a second: long enough for the service to see its client
		// gone (and, were the client's cancellation passed on, to cancel
		// this call); no deadline of the test's depends on it.
		select {
		case <-time.After(time.Second):
		case <-r.Context().Done():
			return
		}
		_, _ = w.Write([]byte(`{"usage":{"prompt_tokens":10,"completion_tokens":20,"total_tokens":30}}`))
	})
	e := startTokens(t, providersstub.Knobs{}, func(c *Config) {
		c.Tokens.ProviderURLs = map[string]string{"openai": url}
		c.Tokens.ProviderTimeout = time.Minute
	})
	user := uuid.NewString()
	tok := e.token(t, user, []string{"USER"})
	body := `{"userId":"` + user + `","provider":"openai","tokens":100}`
	const hangUps = 6 // more than the breaker's threshold (5)
	for i := range hangUps {
		ctx, cancel := context.WithCancel(context.Background())
		req, _ := http.NewRequestWithContext(ctx, "POST", e.base+"/api/v1/tokens/consume", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+tok)
		done := make(chan error, 1)
		go func() {
			resp, err := http.DefaultClient.Do(req)
			if err == nil {
				resp.Body.Close()
			}
			done <- err
		}()
		select {
		case <-entered:
		case err := <-done:
			t.Fatalf("answered (err %v) without calling the provider: the circuit opened", err)
		}
		cancel()
		if err := <-done; err == nil {
			t.Fatal("the hung-up request got an answer")
		}
		deadline := time.Now().Add(time.Minute)
		us := e.usages(t)
		for len(us) <= i && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
			us = e.usages(t)
		}
		if len(us) != i+1 || us[i].Actual != 30 || us[i].Estimate != 100 {
			t.Fatalf("usages %+v, want %d, the last settled at the provider's 30", us, i+1)
		}
	}
	if a := e.do(t, "POST", "/api/v1/tokens/consume", tok, body); a.status != 200 {
		t.Fatalf("after %d hang-ups: %d %s, want 200 (the circuit closed)", hangUps, a.status, a.body)
	}
}
