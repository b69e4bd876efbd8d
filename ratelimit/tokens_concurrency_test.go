package ratelimit

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	ratelimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/leakytokens/leaky/internal/contract"
	providersstub "github.com/leakytokens/leaky/providers-stub"
	"github.com/leakytokens/leaky/ratelimit/ledger"
)

// budgetPolicy has small budgets that do not refill during a test (a token
// in 1000 s): a free user's bucket of 1000 tokens, a pro user's of a
// million, every organisation's pool of 5000; quotas is appended.
const budgetPolicy = `domain: leaky-tokens
failure_mode: deny
default_tier: free
tiers:
  free:
    priority: 10
    roles: [USER]
    buckets:
      "*": {capacity: 1000, leak_rate: 0.001}
  pro:
    priority: 50
    roles: [PRO]
    buckets:
      "*": {capacity: 1000000, leak_rate: 0.001}
organisations:
  "*": {capacity: 5000, leak_rate: 0.001}
providers:
  openai: {capacity: 1000000, leak_rate: 0.001}
`

// budgetQuota gives the pro tier a daily quota of 700 tokens, far below its
// bucket.
const budgetQuota = `quotas:
  time_zone: UTC
  tiers:
    pro: {"*": {allowance: 700, window: day}}
`

// consumeTokens is what each concurrent consume asks for.
const consumeTokens = 100

// budgetEnv is the service with the token API on a real store (memory or
// Redis), a real memory ledger that notes what it recorded, and the stub
// reporting no usage, so each admitted consume is settled at its tokens.
type budgetEnv struct {
	*tokensEnv
	rec *notingLedger
}

func startBudget(t *testing.T, kind, quotas string) *budgetEnv {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "policy.yaml"), []byte(budgetPolicy+quotas), 0o644); err != nil {
		t.Fatal(err)
	}
	key, jwksURL := startJWKS(t)
	cfg := testConfig(t, kind)
	cfg.ConfigPath = dir
	cfg.Tokens.JWKSURL = jwksURL
	cfg.Tokens.ProviderURLs = startStub(t, providersstub.Knobs{Usage: providersstub.UsageMissing})
	cfg.Tokens.ProviderConcurrency = 256 // the bulkhead never refuses here
	svc, err := New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), testStore(t, cfg))
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	rec := &notingLedger{Ledger: ledger.NewMemory(ledger.MemoryOptions{})}
	svc.SetLedger(rec)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- svc.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return &budgetEnv{tokensEnv: &tokensEnv{svc: svc, base: "http://" + svc.HTTPAddr(), key: key}, rec: rec}
}

// startJWKS serves a key set of one new RSA key, as authz publishes it.
func startJWKS(t *testing.T) (*rsa.PrivateKey, string) {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		e := big.NewInt(int64(key.E)).Bytes()
		_ = json.NewEncoder(w).Encode(map[string]any{"keys": []map[string]string{{
			"kty": "RSA", "use": "sig", "alg": "RS256", "kid": testKID,
			"n": base64.RawURLEncoding.EncodeToString(key.N.Bytes()), "e": base64.RawURLEncoding.EncodeToString(e),
		}}})
	}))
	t.Cleanup(srv.Close)
	return key, srv.URL
}

// notingLedger is a ledger that notes every usage it recorded.
type notingLedger struct {
	ledger.Ledger
	mu    sync.Mutex
	usage []ledger.Usage
}

func (l *notingLedger) RecordUsage(ctx context.Context, u ledger.Usage, ev ledger.Event) (bool, error) {
	ok, err := l.Ledger.RecordUsage(ctx, u, ev)
	if ok && err == nil {
		l.mu.Lock()
		l.usage = append(l.usage, u)
		l.mu.Unlock()
	}
	return ok, err
}

// recorded is the count and the sum of Actual of the usage recorded for
// user.
func (l *notingLedger) recorded(user string) (n int, sum int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, u := range l.usage {
		if u.UserID == user {
			n, sum = n+1, sum+u.Actual
		}
	}
	return n, sum
}

// waitRecorded waits until the ledger recorded n usages of user and
// returns their sum.
func (e *budgetEnv) waitRecorded(t *testing.T, user string, n int) int64 {
	t.Helper()
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		got, sum := e.rec.recorded(user)
		if got == n {
			return sum
		}
		if got > n || time.Now().After(deadline) {
			t.Fatalf("the ledger recorded %d usages of %s, want %d", got, user, n)
		}
	}
}

// consumeAll sends n consumes of body with tok at once (released together)
// and counts the answers by status; a 429 must carry the bucket's figures
// and Retry-After, any other refusal the JSON error envelope.
func (e *budgetEnv) consumeAll(t *testing.T, n int, tok, body string) map[int]int {
	t.Helper()
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		count = map[int]int{}
		start = make(chan struct{})
	)
	for range n {
		wg.Go(func() {
			<-start
			req, _ := http.NewRequest(http.MethodPost, e.base+"/api/v1/tokens/consume", strings.NewReader(body))
			req.Header.Set("Authorization", "Bearer "+tok)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Errorf("consume: %v", err)
				return
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			switch resp.StatusCode {
			case http.StatusOK:
			case http.StatusTooManyRequests: // the seed's answer: the bucket's figures
				if !strings.Contains(string(b), `"allowed":false`) || resp.Header.Get("Retry-After") == "" {
					t.Errorf("a 429 without its figures or Retry-After: %v %s", resp.Header, b)
				}
			default:
				if !strings.Contains(string(b), fmt.Sprintf(`"status":%d`, resp.StatusCode)) {
					t.Errorf("a refusal without its error envelope: %d %s", resp.StatusCode, b)
				}
			}
			mu.Lock()
			count[resp.StatusCode]++
			mu.Unlock()
		})
	}
	close(start)
	wg.Wait()
	return count
}

// remaining is what the bucket of one leaky-tokens descriptor has left,
// asked over gRPC with a hits_addend of 0 (charging nothing).
func (e *budgetEnv) remaining(t *testing.T, kv ...string) int64 {
	t.Helper()
	d := &ratelimitv3.RateLimitDescriptor{HitsAddend: wrapperspb.UInt64(0)}
	for i := 0; i+1 < len(kv); i += 2 {
		d.Entries = append(d.Entries, &ratelimitv3.RateLimitDescriptor_Entry{Key: kv[i], Value: kv[i+1]})
	}
	conn, err := grpc.NewClient(e.svc.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	resp, err := rlsv3.NewRateLimitServiceClient(conn).ShouldRateLimit(context.Background(),
		&rlsv3.RateLimitRequest{Domain: contract.Domain, Descriptors: []*ratelimitv3.RateLimitDescriptor{d}})
	if err != nil || len(resp.GetStatuses()) != 1 || resp.GetStatuses()[0].GetCurrentLimit() == nil {
		t.Fatalf("ShouldRateLimit %v: %v, %v", kv, resp, err)
	}
	return int64(resp.GetStatuses()[0].GetLimitRemaining())
}

// consumeBody is a consume of consumeTokens by user, charged to org too
// when org is set.
func consumeBody(user, org string) string {
	if org != "" {
		return fmt.Sprintf(`{"userId":%q,"orgId":%q,"provider":"openai","tokens":%d}`, user, org, consumeTokens)
	}
	return fmt.Sprintf(`{"userId":%q,"provider":"openai","tokens":%d}`, user, consumeTokens)
}

// 64 consumes at once against a small budget, on memory and Redis: the
// admitted ones fit the budget exactly (nothing refills, so every refusal
// came when it was spent), every other one is refused with the budget's
// status (429 for a bucket, 402 for a quota) and charged nothing, and the
// ledger recorded what the budget and the provider's pool were charged.
func TestTokensConcurrentConsumesNeverOverspend(t *testing.T) {
	tests := []struct {
		name    string
		quotas  string
		role    string
		refused int   // the status of a refusal
		budget  int64 // tokens
	}{
		{"the user's bucket", "", "USER", http.StatusTooManyRequests, 1000},
		{"a daily quota", budgetQuota, "PRO", http.StatusPaymentRequired, 700},
	}
	for _, kind := range []string{"memory", "redis"} {
		for _, tt := range tests {
			t.Run(kind+"/"+tt.name, func(t *testing.T) {
				e := startBudget(t, kind, tt.quotas)
				user := uuid.NewString()
				tok := e.token(t, user, []string{tt.role})
				provider := []string{contract.KeyProvider, "openai"}
				poolBefore := e.remaining(t, provider...)

				count := e.consumeAll(t, 64, tok, consumeBody(user, ""))
				admitted := int64(count[http.StatusOK])
				if diff := cmp.Diff(map[int]int{http.StatusOK: int(tt.budget / consumeTokens), tt.refused: 64 - int(tt.budget/consumeTokens)}, count); diff != "" {
					t.Errorf("answers by status (-want +got), a budget of %d tokens, %d each:\n%s", tt.budget, consumeTokens, diff)
				}
				if admitted*consumeTokens > tt.budget {
					t.Fatalf("overspent: %d consumes of %d admitted on a budget of %d", admitted, consumeTokens, tt.budget)
				}
				var left int64
				if tt.quotas == "" {
					left = e.remaining(t, contract.KeyProvider, "openai", contract.KeyTier, "free", contract.KeyUser, user)
				} else {
					a := e.do(t, http.MethodGet, "/api/v1/tokens/quota?userId="+user+"&provider=openai", tok, "")
					left = int64(a.json(t)["remainingTokens"].(float64))
				}
				charged, pool := tt.budget-left, poolBefore-e.remaining(t, provider...)
				recorded := e.waitRecorded(t, user, int(admitted))
				if want := admitted * consumeTokens; charged != want || pool != want || recorded != want {
					t.Errorf("%d admitted of %d tokens: the budget was charged %d, the provider's pool %d, the ledger recorded %d; want %d each",
						admitted, consumeTokens, charged, pool, recorded, want)
				}
				if tt.quotas != "" {
					window := e.svc.clock().UTC().Truncate(24 * time.Hour)
					st, err := e.rec.QuotaState(context.Background(), ledger.Pool{Scope: string(contract.ScopeUser), Subject: user, Provider: "openai"}, window)
					if err != nil || st.Used != charged {
						t.Errorf("the ledger's quota state: used %d, %v; want %d", st.Used, err, charged)
					}
				}
			})
		}
	}
}

// Through REST, an organisation's pool binds while its member's bucket is
// free (a pro member: 5000 of a million), and a member's bucket binds while
// the pool is free (a free member: 1000 of 5000); each refusal is a 429
// naming the budget that bound, and the other budget still admits.
func TestTokensOrgAndUserBudgetsBind(t *testing.T) {
	for _, kind := range []string{"memory", "redis"} {
		t.Run(kind, func(t *testing.T) {
			e := startBudget(t, kind, "")
			consume := func(tok, user, org string) answer {
				return e.do(t, http.MethodPost, "/api/v1/tokens/consume", tok, consumeBody(user, org))
			}
			t.Run("the org's pool binds", func(t *testing.T) {
				user := uuid.NewString()
				tok := e.token(t, user, []string{"PRO"}, "acme")
				count := e.consumeAll(t, 64, tok, consumeBody(user, "acme"))
				if diff := cmp.Diff(map[int]int{http.StatusOK: 50, http.StatusTooManyRequests: 14}, count); diff != "" {
					t.Errorf("answers by status, an org pool of 5000 (-want +got):\n%s", diff)
				}
				if a := consume(tok, user, "acme"); a.status != http.StatusTooManyRequests || !strings.HasPrefix(a.header.Get("RateLimit"), `"org"`) {
					t.Errorf("over the org's pool: want 429 naming org, got %d %v %s", a.status, a.header, a.body)
				}
				if a := consume(tok, user, ""); a.status != http.StatusOK {
					t.Errorf("the member's own bucket is free: want 200, got %d %s", a.status, a.body)
				}
				if left := e.remaining(t, contract.KeyProvider, "openai", contract.KeyOrg, "acme"); left != 0 {
					t.Errorf("the org's pool has %d left, want 0", left)
				}
			})
			t.Run("the user's bucket binds", func(t *testing.T) {
				user, other := uuid.NewString(), uuid.NewString()
				tok := e.token(t, user, []string{"USER"}, "globex")
				count := e.consumeAll(t, 64, tok, consumeBody(user, "globex"))
				if diff := cmp.Diff(map[int]int{http.StatusOK: 10, http.StatusTooManyRequests: 54}, count); diff != "" {
					t.Errorf("answers by status, a user bucket of 1000 (-want +got):\n%s", diff)
				}
				if a := consume(tok, user, "globex"); a.status != http.StatusTooManyRequests || !strings.HasPrefix(a.header.Get("RateLimit"), `"user"`) {
					t.Errorf("over the user's bucket: want 429 naming user, got %d %v %s", a.status, a.header, a.body)
				}
				if a := consume(e.token(t, other, []string{"USER"}, "globex"), other, "globex"); a.status != http.StatusOK {
					t.Errorf("another member through the org's free pool: want 200, got %d %s", a.status, a.body)
				}
				if left := e.remaining(t, contract.KeyProvider, "openai", contract.KeyOrg, "globex"); left != 5000-11*consumeTokens {
					t.Errorf("the org's pool has %d left, want %d", left, 5000-11*consumeTokens)
				}
			})
		})
	}
}
