package authz

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/leakytokens/leaky/authz/pgstore"
	"github.com/leakytokens/leaky/authz/store"
)

// openStore opens what cmd/leaky opens for url: the memory store for "",
// else PostgreSQL with the migrations applied.
func openStore(ctx context.Context, url string) (store.Store, error) {
	if url == "" {
		return store.NewMemory(), nil
	}
	s, err := pgstore.OpenMigrated(ctx, url)
	if err != nil {
		return nil, err // not a nil *pgstore.Store in a non-nil interface
	}
	return s, nil
}

// testStore opens the store cfg.DatabaseURL names, for New (which then
// owns it).
func testStore(t testing.TB, cfg Config) store.Store {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := openStore(ctx, cfg.DatabaseURL)
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	return st
}

var errFakeDown = errors.New("fake store down")

// fakeStore is the memory store behind a switch: while down, Ping and API
// key lookups fail. It records whether it was closed.
type fakeStore struct {
	store.Store
	down   atomic.Bool
	closed atomic.Bool
}

func (f *fakeStore) Ping(ctx context.Context) error {
	if f.down.Load() {
		return errFakeDown
	}
	return f.Store.Ping(ctx)
}

func (f *fakeStore) APIKeyByID(ctx context.Context, id string) (store.APIKey, error) {
	if f.down.Load() {
		return store.APIKey{}, errFakeDown
	}
	return f.Store.APIKeyByID(ctx, id)
}

func (f *fakeStore) Close() {
	f.closed.Store(true)
	f.Store.Close()
}

// The service built by New runs on whatever store it is handed: readiness
// and Check's failure answer follow the store's own errors, and Run's end
// closes it.
func TestServiceOnAFakeStore(t *testing.T) {
	fs := &fakeStore{Store: store.NewMemory()}
	svc, err := newTestService(t.Context(), testConfig(), slog.New(slog.DiscardHandler), fs)
	if err != nil {
		t.Fatalf("New() = %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- svc.Run(ctx) }()
	conn, err := grpc.NewClient(svc.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ts := &testService{Service: svc, client: authv3.NewAuthorizationClient(conn), base: "http://" + svc.HTTPAddr(), logs: &logBuffer{}}

	u := ts.register(t, "fake")
	key := ts.newKey(t, u.Token, nil) // not yet verified, so not cached
	h := map[string]string{"x-api-key": key.APIKey}
	// Readiness follows the store's Ping as the runtime's probe sees it
	// (every ReadinessInterval), so wait for each transition.
	waitFor(t, "readyz 200 while the store is up", func() bool { return ts.readyCode(t) == http.StatusOK })

	fs.down.Store(true)
	waitFor(t, "readyz 503 while the store's Ping fails", func() bool { return ts.readyCode(t) == http.StatusServiceUnavailable })
	if got := deniedStatus(ts.check(t, "/openai/x", h, "")); got != http.StatusServiceUnavailable {
		t.Errorf("Check while the store fails = %d, want 503 (store-failure deny)", got)
	}

	fs.down.Store(false)
	waitFor(t, "readyz 200 after the store is back", func() bool { return ts.readyCode(t) == http.StatusOK })
	if ts.check(t, "/openai/x", h, "").GetOkResponse() == nil {
		t.Error("Check refused a valid key once the store was back")
	}

	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run() = %v", err)
	}
	if !fs.closed.Load() {
		t.Error("Run returned without closing the store")
	}
}

// New owns the store even when it fails.
func TestNewClosesTheStoreWhenItFails(t *testing.T) {
	for _, tt := range []struct {
		name   string
		mutate func(*Config)
		want   string // in the error
	}{
		{"invalid config", func(c *Config) { c.Issuer = "" }, "issuer"},
		{"missing policy", func(c *Config) { c.PolicyPath = t.TempDir() + "/absent.yaml" }, "absent.yaml"},
		{"unbindable address", func(c *Config) { c.HTTPAddr = "256.0.0.1:0" }, "256.0.0.1"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig()
			tt.mutate(&cfg)
			fs := &fakeStore{Store: store.NewMemory()}
			svc, err := newTestService(t.Context(), cfg, slog.New(slog.DiscardHandler), fs)
			if err == nil {
				svc.Close()
				t.Fatal("New() = nil error, want one")
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("New() = %v, want an error about %q", err, tt.want)
			}
			if !fs.closed.Load() {
				t.Error("New failed without closing the store it was given")
			}
		})
	}
}

// hangingStore is the memory store whose signing keys never load: the
// call waits for its context, as a dial to an unreachable database would.
// entered is closed when the first such call has begun.
type hangingStore struct {
	fakeStore
	entered chan struct{}
	once    sync.Once
}

func (h *hangingStore) SigningKeys(ctx context.Context) ([]store.SigningKey, error) {
	h.once.Do(func() { close(h.entered) })
	<-ctx.Done()
	return nil, ctx.Err()
}

// New's startup I/O runs under the caller's context: cancelling it (a
// signal during startup) ends New with the context's error, and the store
// is closed.
func TestNewHearsItsContext(t *testing.T) {
	hs := &hangingStore{fakeStore: fakeStore{Store: store.NewMemory()}, entered: make(chan struct{})}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		svc, err := newTestService(ctx, testConfig(), slog.New(slog.DiscardHandler), hs)
		if err == nil {
			svc.Close()
		}
		done <- err
	}()
	<-hs.entered
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("New() after its context was cancelled = %v, want context.Canceled", err)
	}
	if !hs.closed.Load() {
		t.Error("New failed without closing the store it was given")
	}
}
