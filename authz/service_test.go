package authz

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/leakytokens/leaky/authz/store"
	"github.com/leakytokens/leaky/internal/serve"
)

// logBuffer collects log output for the no-secrets-in-logs assertions.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

type testService struct {
	*Service
	client authv3.AuthorizationClient
	base   string
	logs   *logBuffer
}

// testCheckTimeout is Check's store deadline in every test service that is
// not about the deadline: the production 150 ms is missed now and then on a
// loaded machine (a cold build beside the tests), and a missed deadline
// turns an expected answer into the failure answer. Tests of the deadline
// set DefaultConfig().CheckTimeout themselves and judge it with a margin.
const testCheckTimeout = 2 * time.Second

// testConfig is a fast configuration on loopback port 0 with
// testCheckTimeout, which Validate refuses (startPG sees to that).
func testConfig() Config {
	c := DefaultConfig()
	c.GRPCAddr, c.HTTPAddr = "127.0.0.1:0", "127.0.0.1:0"
	c.SigningSecret = "test-signing-secret-0123456789"
	c.Argon2MemoryKiB, c.Argon2Time = 64, 1
	c.AdminUsername, c.AdminPassword = "admin", "admin-password-123"
	c.ShutdownGrace = 2 * time.Second
	c.CheckTimeout = testCheckTimeout
	return c
}

// newTestService is New for a test: New holds CheckTimeout to Envoy's
// budget, so a longer one from cfg (testCheckTimeout) is applied after
// validation.
func newTestService(ctx context.Context, cfg Config, logger *slog.Logger, st store.Store) (*Service, error) {
	return newTestServiceWith(ctx, cfg, logger, st, nil)
}

// newTestServiceWith is newTestService with keyClock, when non-nil, as the
// API key cache's clock.
func newTestServiceWith(ctx context.Context, cfg Config, logger *slog.Logger, st store.Store, keyClock func() time.Time) (*Service, error) {
	h := hooks{keyClock: keyClock, checkTimeout: cfg.CheckTimeout}
	cfg.CheckTimeout = min(cfg.CheckTimeout, DefaultConfig().CheckTimeout)
	return newWithHooks(ctx, cfg, logger, st, h)
}

// fakeClock is a settable clock for the API key cache; safe for concurrent
// use.
type fakeClock struct{ ns atomic.Int64 }

func newFakeClock() *fakeClock {
	c := &fakeClock{}
	c.ns.Store(time.Now().UnixNano())
	return c
}

func (c *fakeClock) Now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *fakeClock) Advance(d time.Duration) { c.ns.Add(int64(d)) }

// startService runs a Service on st (a fresh memory store when nil) until
// the test ends.
func startService(t testing.TB, st store.Store, mutate func(*Config)) *testService {
	t.Helper()
	return startServiceWith(t, st, mutate, nil)
}

// startServiceWith is startService with keyClock, when non-nil, as the API
// key cache's clock.
func startServiceWith(t testing.TB, st store.Store, mutate func(*Config), keyClock func() time.Time) *testService {
	t.Helper()
	cfg := testConfig()
	if mutate != nil {
		mutate(&cfg)
	}
	if st == nil {
		st = store.NewMemory()
	}
	logs := &logBuffer{}
	logger := slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	pol, err := loadPolicy(cfg.PolicyPath)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	svc, err := newService(ctx, cfg, logger, nopClose{st}, pol, hooks{keyClock: keyClock})
	if err != nil {
		t.Fatalf("newService() = %v", err)
	}
	runCtx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- svc.Run(runCtx) }()
	conn, err := grpc.NewClient(svc.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		conn.Close()
		stop()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run() = %v, want nil", err)
			}
		case <-time.After(30 * time.Second): // shutdown grace 2 s, on a loaded machine
			t.Error("Run() did not return within 30s of cancellation")
		}
	})
	return &testService{Service: svc, client: authv3.NewAuthorizationClient(conn), base: "http://" + svc.HTTPAddr(), logs: logs}
}

// nopClose lets several services share one store in a test.
type nopClose struct{ store.Store }

func (nopClose) Close() {}

// call makes an HTTP request with an optional bearer token and JSON body
// and decodes the JSON answer into out (when non-nil).
func (ts *testService) call(t testing.TB, method, path, bearer string, in, out any) int {
	t.Helper()
	var body io.Reader
	if in != nil {
		b, _ := json.Marshal(in)
		body = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, ts.base+path, body)
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if resp.StatusCode >= 400 {
		var e serve.ErrorBody
		if json.Unmarshal(data, &e) != nil || e.Error == "" || e.Message == "" {
			t.Errorf("%s %s = %d with body %q, want the JSON error envelope", method, path, resp.StatusCode, data)
		}
	}
	if out != nil && len(data) > 0 {
		if err := json.Unmarshal(data, out); err != nil {
			t.Fatalf("%s %s: decode %q: %v", method, path, data, err)
		}
	}
	return resp.StatusCode
}

// register creates a user and returns its login answer.
func (ts *testService) register(t testing.TB, name string) authResponse {
	t.Helper()
	var out authResponse
	code := ts.call(t, "POST", "/api/v1/auth/register", "", map[string]string{
		"username": name, "email": name + "@example.com", "password": "password-" + name,
	}, &out)
	if code != http.StatusCreated {
		t.Fatalf("register(%s) = %d, want 201", name, code)
	}
	return out
}

func (ts *testService) adminToken(t testing.TB) string {
	t.Helper()
	var out authResponse
	if code := ts.call(t, "POST", "/api/v1/auth/login", "", map[string]string{"username": "admin", "password": "admin-password-123"}, &out); code != 200 {
		t.Fatalf("admin login = %d", code)
	}
	return out.Token
}

// newKey creates an API key for the bearer's user and returns the secret.
func (ts *testService) newKey(t testing.TB, bearer string, in map[string]any) keyJSON {
	t.Helper()
	var out keyJSON
	if code := ts.call(t, "POST", "/api/v1/auth/api-keys", bearer, in, &out); code != http.StatusCreated {
		t.Fatalf("create api key = %d, want 201", code)
	}
	return out
}

// check sends a CheckRequest with the given headers, path and body.
func (ts *testService) check(t testing.TB, path string, headers map[string]string, body string) *authv3.CheckResponse {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := ts.client.Check(ctx, &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			Method: "POST", Path: path, Host: "llm.example", Headers: headers, Body: body,
		}},
	}})
	if err != nil {
		t.Fatalf("Check(%s) = %v", path, err)
	}
	return resp
}

func okHeaders(resp *authv3.CheckResponse) map[string]string {
	out := map[string]string{}
	for _, h := range resp.GetOkResponse().GetHeaders() {
		out[h.GetHeader().GetKey()] = h.GetHeader().GetValue()
	}
	return out
}

func deniedStatus(resp *authv3.CheckResponse) int {
	return int(resp.GetDeniedResponse().GetStatus().GetCode())
}
