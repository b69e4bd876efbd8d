package ratelimit

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/leakytokens/leaky/ratelimit/redisstore"
	"github.com/leakytokens/leaky/ratelimit/store"
)

// The adapters cmd/leaky chooses keep offering what the service looks for:
// a renamed or re-typed method would otherwise be dropped silently by the
// type assertions.
var (
	_ pinger          = (*redisstore.Store)(nil)
	_ errorClassifier = (*redisstore.Store)(nil)
	_ io.Closer       = (*redisstore.Store)(nil)
	_ runner          = (*store.Memory)(nil)
	_ evictionCounter = (*store.Memory)(nil)
)

// testStore opens the store cfg names, as cmd/leaky does: the memory store,
// or Redis (tests point cfg at testenv's). The service it is given closes it.
func testStore(t testing.TB, cfg Config) store.Store {
	t.Helper()
	if cfg.Store != "redis" {
		return store.NewMemory(store.MemoryOptions{MaxKeys: cfg.MemoryMaxKeys})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rs, err := redisstore.New(ctx, redisstore.Options{
		URL: cfg.RedisURL, Prefix: cfg.RedisPrefix, Timeout: cfg.RedisTimeout, PoolSize: cfg.RedisPoolSize,
	})
	if err != nil {
		t.Fatalf("redis store: %v", err)
	}
	return rs
}

var errFakeDown = errors.New("fake store down")

// fakeStore admits everything while up and fails every call while down. It
// offers every optional capability the service looks for.
type fakeStore struct {
	down    atomic.Bool
	running atomic.Bool // inside Run
	ran     atomic.Bool // Run was entered
	closed  atomic.Bool
}

func (f *fakeStore) Decide(_ context.Context, items []store.Item) (store.Decision, error) {
	if f.down.Load() {
		return store.Decision{}, errFakeDown
	}
	d := store.Decision{Allowed: true, Results: make([]store.Result, len(items))}
	for i, it := range items {
		d.Results[i] = store.Result{Allowed: true, Remaining: it.Limit - it.Hits}
	}
	return d, nil
}

func (f *fakeStore) Adjust(context.Context, []store.Adjustment) error {
	if f.down.Load() {
		return errFakeDown
	}
	return nil
}

func (f *fakeStore) Ping(context.Context) error {
	if f.down.Load() {
		return errFakeDown
	}
	return nil
}

func (f *fakeStore) ErrorKind(err error) string {
	if errors.Is(err, errFakeDown) {
		return "fake_down"
	}
	return "other"
}

func (f *fakeStore) Evictions() uint64 { return 7 }

func (f *fakeStore) Run(ctx context.Context) error {
	f.ran.Store(true)
	f.running.Store(true)
	defer f.running.Store(false)
	<-ctx.Done()
	return nil
}

func (f *fakeStore) Close() error {
	f.closed.Store(true)
	return nil
}

// The service runs on whatever store it is handed: readiness, gRPC health,
// the failure mode, the err_type label, the eviction series, background
// upkeep and the final Close all come from the store's own methods.
func TestServiceOnAFakeStore(t *testing.T) {
	fs := &fakeStore{}
	fs.down.Store(true)
	cfg := testConfig(t, "memory", "policy.yaml")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	svc, err := New(cfg, slog.New(slog.DiscardHandler), fs)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- svc.Run(ctx) }()
	conn, err := grpc.NewClient(svc.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	s := &server{svc: svc, client: rlsv3.NewRateLimitServiceClient(conn)}
	user := desc("provider=openai,tier=free,user=fake")

	eventuallyHealth(t, svc, 503, healthpb.HealthCheckResponse_NOT_SERVING) // while the store's Ping fails
	if r := s.ask(t, "leaky-tokens", 1, user); r.OverallCode != rlsv3.RateLimitResponse_OVER_LIMIT {
		t.Errorf("decision while down = %v, want OVER_LIMIT (failure_mode deny)", r.OverallCode)
	}
	_, metrics := httpGet(t, "http://"+svc.HTTPAddr()+"/metrics")
	for _, want := range []string{
		`ratelimit_service_should_rate_limit_error{err_type="fake_down"} 1`,
		`ratelimit_service_failure_mode_total{mode="deny"} 1`,
		`ratelimit_service_memory_evictions_total 7`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %q", want)
		}
	}

	fs.down.Store(false)
	eventuallyHealth(t, svc, 200, healthpb.HealthCheckResponse_SERVING) // once Ping answers
	if r := s.ask(t, "leaky-tokens", 1, user); r.OverallCode != rlsv3.RateLimitResponse_OK {
		t.Errorf("decision while up = %v, want OK", r.OverallCode)
	}
	if !fs.ran.Load() {
		t.Error("the store's Run was never started")
	}

	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run = %v", err)
	}
	if fs.running.Load() || !fs.closed.Load() {
		t.Errorf("after Run: store running %v, closed %v; want its Run ended and the store closed", fs.running.Load(), fs.closed.Load())
	}
}

// New owns the store even when it fails: a bad config closes it.
func TestNewClosesTheStoreWhenItFails(t *testing.T) {
	for _, tt := range []struct {
		name   string
		mutate func(*Config)
	}{
		{"invalid config", func(c *Config) { c.MaxDescriptors = 0 }},
		{"missing policy", func(c *Config) { c.ConfigPath = t.TempDir() + "/absent.yaml" }},
		{"unbindable address", func(c *Config) { c.GRPCAddr = "256.0.0.1:0" }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig(t, "memory")
			tt.mutate(&cfg)
			fs := &fakeStore{}
			if _, err := New(cfg, slog.New(slog.DiscardHandler), fs); err == nil {
				t.Fatal("New succeeded, want an error")
			}
			if !fs.closed.Load() {
				t.Error("New failed without closing the store it was given")
			}
		})
	}
}
