package ratelimit

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	ratelimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/leakytokens/leaky/internal/testenv"
	"github.com/leakytokens/leaky/ratelimit/store"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

// server is a running Service and a client connected to it.
type server struct {
	svc    *Service
	client rlsv3.RateLimitServiceClient
	cancel context.CancelFunc
	done   chan error
}

// testStoreTimeout is the Redis deadline of every test service that is not
// about the deadline: the production 15 ms is missed now and then on a
// loaded machine (a cold build beside the tests), and a missed deadline
// turns an expected answer into the failure mode. Tests of the deadline set
// DefaultConfig().RedisTimeout themselves and judge it with a margin.
const testStoreTimeout = 2 * time.Second

// testConfig returns a config on free loopback ports reading dir (a copy of
// the given testdata files) with the given store and testStoreTimeout.
func testConfig(t *testing.T, storeKind string, files ...string) Config {
	t.Helper()
	cfg := DefaultConfig()
	cfg.GRPCAddr, cfg.HTTPAddr = "127.0.0.1:0", "127.0.0.1:0"
	cfg.Store = storeKind
	cfg.ShutdownGrace = 2 * time.Second
	cfg.RedisTimeout = testStoreTimeout
	if storeKind == "redis" {
		cfg.RedisURL = testenv.RedisURL(t)
		cfg.RedisPrefix = testenv.Prefix(t) // namespace this test's keys
	}
	if len(files) > 0 {
		dir := t.TempDir()
		for _, f := range files {
			data, err := os.ReadFile(filepath.Join("testdata", f))
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, f), data, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		cfg.ConfigPath = dir
	}
	return cfg
}

func start(t testing.TB, cfg Config) *server {
	t.Helper()
	return startOn(t, cfg, testStore(t, cfg), nil)
}

// startOn is start on the store st; prepare, when set, adjusts the
// service before it runs.
func startOn(t testing.TB, cfg Config, st store.Store, prepare func(*Service)) *server {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	svc, err := New(cfg, logger, st)
	if err != nil {
		cancel()
		t.Fatalf("New: %v", err)
	}
	if prepare != nil {
		prepare(svc)
	}
	s := &server{svc: svc, cancel: cancel, done: make(chan error, 1)}
	go func() { s.done <- svc.Run(ctx) }()
	conn, err := grpc.NewClient(svc.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	s.client = rlsv3.NewRateLimitServiceClient(conn)
	t.Cleanup(func() {
		conn.Close()
		cancel()
		if err := <-s.done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return s
}

// desc builds a descriptor from "k=v,k=v".
func desc(kv string) *ratelimitv3.RateLimitDescriptor {
	d := &ratelimitv3.RateLimitDescriptor{}
	for _, pair := range strings.Split(kv, ",") {
		k, v, _ := strings.Cut(pair, "=")
		d.Entries = append(d.Entries, &ratelimitv3.RateLimitDescriptor_Entry{Key: k, Value: v})
	}
	return d
}

func withHits(d *ratelimitv3.RateLimitDescriptor, n uint64) *ratelimitv3.RateLimitDescriptor {
	d.HitsAddend = wrapperspb.UInt64(n)
	return d
}

func (s *server) ask(t *testing.T, domain string, hits uint32, ds ...*ratelimitv3.RateLimitDescriptor) *rlsv3.RateLimitResponse {
	t.Helper()
	resp, err := s.client.ShouldRateLimit(context.Background(), &rlsv3.RateLimitRequest{Domain: domain, Descriptors: ds, HitsAddend: hits})
	if err != nil {
		t.Fatalf("ShouldRateLimit(%s): %v", domain, err)
	}
	return resp
}

func header(resp *rlsv3.RateLimitResponse, name string) string {
	for _, h := range resp.GetResponseHeadersToAdd() {
		if strings.EqualFold(h.GetKey(), name) {
			return h.GetValue()
		}
	}
	return ""
}

func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// eventually polls cond every 10 ms until it holds, failing the test after
// 30 s: a bound for a loaded machine, not a measure of speed.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("timed out waiting for %s", what)
}

func TestUserBucketAdmitsCapacityThenRefuses(t *testing.T) {
	for _, kind := range []string{"memory", "redis"} {
		t.Run(kind, func(t *testing.T) {
			s := start(t, testConfig(t, kind, "policy.yaml"))
			user := "provider=openai,tier=free,user=alice"
			if r := s.ask(t, "leaky-tokens", 600, desc(user)); r.OverallCode != rlsv3.RateLimitResponse_OK {
				t.Fatalf("600 of 1000: %v, want OK", r.OverallCode)
			} else if got := r.Statuses[0].LimitRemaining; got != 400 {
				t.Errorf("remaining after 600 of 1000 = %d, want 400", got)
			}
			if r := s.ask(t, "leaky-tokens", 400, desc(user)); r.OverallCode != rlsv3.RateLimitResponse_OK {
				t.Fatalf("next 400: %v, want OK", r.OverallCode)
			}
			r := s.ask(t, "leaky-tokens", 10, desc(user))
			if r.OverallCode != rlsv3.RateLimitResponse_OVER_LIMIT {
				t.Fatalf("10 more: %v, want OVER_LIMIT", r.OverallCode)
			}
			// 10 tokens at 0.001 tokens/s free in 10,000 s.
			if got := header(r, "retry-after"); got != "10000" {
				t.Errorf("Retry-After = %q, want 10000", got)
			}
			if got := header(r, "ratelimit-policy"); got != `"user";q=1000;w=1000000` {
				t.Errorf("RateLimit-Policy = %q", got)
			}
			if got := header(r, "ratelimit"); got != `"user";r=0;t=10000` {
				t.Errorf("RateLimit = %q", got)
			}
			var body overLimitBody
			if err := json.Unmarshal(r.RawBody, &body); err != nil {
				t.Fatalf("body %q: %v", r.RawBody, err)
			}
			want := overLimitBody{Error: "rate_limited", Scope: "user", Limit: 1000, Remaining: 0, RetryAfterSeconds: 10000}
			if body != want {
				t.Errorf("body = %+v, want %+v", body, want)
			}
			if st := r.Statuses[0]; st.Code != rlsv3.RateLimitResponse_OVER_LIMIT || st.CurrentLimit.GetRequestsPerUnit() != 1000 || st.DurationUntilReset.AsDuration() < 999*time.Second {
				t.Errorf("status = %v", st)
			}
		})
	}
}

func TestAllOrNothingAcrossUserOrgProvider(t *testing.T) {
	for _, kind := range []string{"memory", "redis"} {
		t.Run(kind, func(t *testing.T) {
			s := start(t, testConfig(t, kind, "policy.yaml"))
			alice := desc("provider=openai,tier=pro,user=alice")
			bob := desc("provider=openai,tier=pro,user=bob")
			org := desc("provider=openai,org=acme")
			prov := desc("provider=openai")
			// The org pool (1500) is the tightest: alice takes 1000 of it.
			if r := s.ask(t, "leaky-tokens", 1000, alice, org, prov); r.OverallCode != rlsv3.RateLimitResponse_OK {
				t.Fatalf("alice 1000: %v", r.OverallCode)
			}
			// Bob's own bucket (5000) would admit 1000, the org pool would not.
			r := s.ask(t, "leaky-tokens", 1000, bob, org, prov)
			if r.OverallCode != rlsv3.RateLimitResponse_OVER_LIMIT {
				t.Fatalf("bob 1000: %v, want OVER_LIMIT", r.OverallCode)
			}
			codes := []rlsv3.RateLimitResponse_Code{r.Statuses[0].Code, r.Statuses[1].Code, r.Statuses[2].Code}
			wantCodes := []rlsv3.RateLimitResponse_Code{rlsv3.RateLimitResponse_OK, rlsv3.RateLimitResponse_OVER_LIMIT, rlsv3.RateLimitResponse_OK}
			for i := range codes {
				if codes[i] != wantCodes[i] {
					t.Errorf("status %d = %v, want %v", i, codes[i], wantCodes[i])
				}
			}
			var body overLimitBody
			_ = json.Unmarshal(r.RawBody, &body)
			if body.Scope != "org" {
				t.Errorf("scope = %q, want org", body.Scope)
			}
			// Nothing was charged: a check-only request sees bob's bucket and
			// the provider pool as before.
			r = s.ask(t, "leaky-tokens", 1, withHits(bob, 0), withHits(prov, 0))
			if got := r.Statuses[0].LimitRemaining; got != 5000 {
				t.Errorf("bob remaining after refused request = %d, want 5000", got)
			}
			if got := r.Statuses[1].LimitRemaining; got != 99000 {
				t.Errorf("provider remaining = %d, want 99000", got)
			}
		})
	}
}

func TestUnknownTierUsesDefaultTier(t *testing.T) {
	s := start(t, testConfig(t, "memory", "policy.yaml"))
	r := s.ask(t, "leaky-tokens", 1, desc("provider=openai,tier=platinum,user=carol"))
	if got := r.Statuses[0].GetCurrentLimit().GetRequestsPerUnit(); got != 1000 {
		t.Errorf("limit for unknown tier = %d, want the default tier's 1000", got)
	}
}
