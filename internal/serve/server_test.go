package serve

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
)

// testConfig is the default configuration with a fast readiness loop.
func testConfig() Config {
	c := DefaultConfig()
	c.ReadinessInterval = 20 * time.Millisecond
	c.ShutdownGrace = 2 * time.Second
	return c
}

// running is a Server whose Run was started by start.
type running struct {
	*Server
	cancel  context.CancelFunc
	done    chan error
	bound   time.Duration // how long a stop may take, generously
	stopped bool
	err     error
}

// wait waits for Run to return (after cancel) and reports its error.
func (r *running) wait(t *testing.T) error {
	t.Helper()
	if !r.stopped {
		select {
		case r.err = <-r.done:
		case <-time.After(r.bound):
			t.Fatalf("Run() did not return within %v of cancellation", r.bound)
		}
		r.stopped = true
	}
	return r.err
}

// start builds a Server on loopback port 0 with the panicking test service
// registered, runs it until the test ends and checks that Run returns nil.
func start(t *testing.T, cfg Config, opts Options) *running {
	t.Helper()
	return startWith(t, cfg, opts, nil)
}

// startWith is start with before, when non-nil, called on the Server
// between New and Run.
func startWith(t *testing.T, cfg Config, opts Options, before func(*Server)) *running {
	t.Helper()
	opts.GRPCAddr, opts.HTTPAddr = "127.0.0.1:0", "127.0.0.1:0"
	s, err := New(cfg, opts, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatalf("New() = %v", err)
	}
	s.RegisterService(&panicService, nil)
	if before != nil {
		before(s)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{Server: s, cancel: cancel, done: make(chan error, 1), bound: cfg.ShutdownDelay + cfg.ShutdownGrace + 10*time.Second}
	go func() { r.done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := r.wait(t); err != nil {
			t.Errorf("Run() = %v, want nil", err)
		}
	})
	return r
}

func dial(t *testing.T, addr string) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// eventually polls cond every 10 ms for up to 10 s.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("timed out waiting for %s", what)
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	c := http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func healthOf(t *testing.T, conn *grpc.ClientConn, service string) healthpb.HealthCheckResponse_ServingStatus {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: service})
	if err != nil {
		t.Fatalf("health Check(%q): %v", service, err)
	}
	return resp.Status
}

// panicService is a gRPC service whose methods panic.
var panicService = grpc.ServiceDesc{
	ServiceName: "test.Panic",
	HandlerType: (*any)(nil),
	Methods: []grpc.MethodDesc{{
		MethodName: "Unary",
		Handler: func(_ any, ctx context.Context, dec func(any) error, ic grpc.UnaryServerInterceptor) (any, error) {
			in := new(healthpb.HealthCheckRequest)
			if err := dec(in); err != nil {
				return nil, err
			}
			h := func(context.Context, any) (any, error) { panic("unary boom") }
			return ic(ctx, in, &grpc.UnaryServerInfo{FullMethod: "/test.Panic/Unary"}, h)
		},
	}},
	Streams: []grpc.StreamDesc{{
		StreamName:    "Stream",
		ServerStreams: true,
		ClientStreams: true,
		Handler:       func(any, grpc.ServerStream) error { panic("stream boom") },
	}},
}

func TestPanicsAreRecovered(t *testing.T) {
	boom := http.HandlerFunc(func(http.ResponseWriter, *http.Request) { panic("http boom") })
	s := start(t, testConfig(), Options{Handler: boom})
	conn := dial(t, s.GRPCAddr())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	err := conn.Invoke(ctx, "/test.Panic/Unary", &healthpb.HealthCheckRequest{}, &healthpb.HealthCheckResponse{})
	if status.Code(err) != codes.Internal {
		t.Errorf("unary call to a panicking handler = %v, want code Internal", err)
	}
	st, err := conn.NewStream(ctx, &panicService.Streams[0], "/test.Panic/Stream")
	if err != nil {
		t.Fatal(err)
	}
	if err := st.RecvMsg(&healthpb.HealthCheckResponse{}); status.Code(err) != codes.Internal {
		t.Errorf("stream call to a panicking handler = %v, want code Internal", err)
	}
	code, body := get(t, "http://"+s.HTTPAddr()+"/anything")
	var got ErrorBody
	if err := json.Unmarshal([]byte(body), &got); code != http.StatusInternalServerError || err != nil || got.Error != "internal" {
		t.Errorf("GET of a panicking handler = %d %s, want 500 {\"error\":\"internal\",…}", code, body)
	}
	// The process and the connection survived.
	if got := healthOf(t, conn, ""); got != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("health after the panics = %v, want SERVING", got)
	}
}

func TestOwnRoutes(t *testing.T) {
	s := start(t, testConfig(), Options{})
	base := "http://" + s.HTTPAddr()
	for _, tt := range []struct {
		path     string
		want     int
		contains string
	}{
		{"/livez", 200, `"status":"ok"`},
		{"/readyz", 200, `"status":"ok"`},
		{"/metrics", 200, "go_goroutines"},
		{"/nothing", 404, `"error":"not_found"`},
	} {
		if code, body := get(t, base+tt.path); code != tt.want || !strings.Contains(body, tt.contains) {
			t.Errorf("GET %s = %d %q, want %d containing %s", tt.path, code, body, tt.want, tt.contains)
		}
	}
}

// fakeProbe fails while its error is set.
type fakeProbe struct{ err atomic.Pointer[error] }

func (p *fakeProbe) set(err error) { p.err.Store(&err) }

func (p *fakeProbe) check(context.Context) error {
	if e := p.err.Load(); e != nil {
		return *e
	}
	return nil
}

func TestHealthFollowsProbes(t *testing.T) {
	db, keys := &fakeProbe{}, &fakeProbe{}
	s := start(t, testConfig(), Options{Probes: []Probe{{"db", db.check}, {"keys", keys.check}}})
	conn := dial(t, s.GRPCAddr())
	readyz := "http://" + s.HTTPAddr() + "/readyz"
	for _, step := range []struct {
		name        string
		db, keys    error
		want        healthpb.HealthCheckResponse_ServingStatus
		wantCode    int
		wantFailing []string
	}{
		{"both pass", nil, nil, healthpb.HealthCheckResponse_SERVING, 200, nil},
		{"db fails", errors.New("down"), nil, healthpb.HealthCheckResponse_NOT_SERVING, 503, []string{"db"}},
		{"both fail", errors.New("down"), errors.New("none"), healthpb.HealthCheckResponse_NOT_SERVING, 503, []string{"db", "keys"}},
		{"both pass again", nil, nil, healthpb.HealthCheckResponse_SERVING, 200, nil},
	} {
		db.set(step.db)
		keys.set(step.keys)
		var body struct{ Failing []string }
		eventually(t, step.name, func() bool {
			code, b := get(t, readyz)
			body.Failing = nil
			_ = json.Unmarshal([]byte(b), &body)
			return code == step.wantCode && cmp.Equal(body.Failing, step.wantFailing) &&
				healthOf(t, conn, "") == step.want && healthOf(t, conn, "test.Panic") == step.want
		})
	}
}

// The first answer is already the probes' (they run before serving), and
// Recheck runs them at once rather than at the next interval.
func TestFirstAnswerAndRecheck(t *testing.T) {
	p := &fakeProbe{}
	p.set(errors.New("down"))
	cfg := testConfig()
	cfg.ReadinessInterval = time.Hour
	s := start(t, cfg, Options{Probes: []Probe{{"store", p.check}}})
	conn := dial(t, s.GRPCAddr())
	if got := healthOf(t, conn, "test.Panic"); got != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Errorf("first health answer with a failing probe = %v, want NOT_SERVING", got)
	}
	p.set(nil)
	s.Recheck()
	eventually(t, "SERVING after Recheck", func() bool { return healthOf(t, conn, "test.Panic") == healthpb.HealthCheckResponse_SERVING })
}

// At stop, health turns NOT_SERVING and /readyz 503 while the listeners are
// still open (for ShutdownDelay); then Run returns.
func TestStopTurnsNotServingFirst(t *testing.T) {
	cfg := testConfig()
	cfg.ShutdownDelay = 5 * time.Second
	s := start(t, cfg, Options{})
	conn := dial(t, s.GRPCAddr())
	watch, err := healthpb.NewHealthClient(conn).Watch(context.Background(), &healthpb.HealthCheckRequest{Service: "test.Panic"})
	if err != nil {
		t.Fatal(err)
	}
	if st, err := watch.Recv(); err != nil || st.Status != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("watch before stop = %v %v, want SERVING", st.GetStatus(), err)
	}
	s.cancel()
	if st, err := watch.Recv(); err != nil || st.Status != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Errorf("watch after stop began = %v %v, want NOT_SERVING", st.GetStatus(), err)
	}
	code, body := get(t, "http://"+s.HTTPAddr()+"/readyz")
	if code != http.StatusServiceUnavailable || !strings.Contains(body, `"stopping":true`) {
		t.Errorf("readyz during the shutdown delay = %d %s, want 503 stopping", code, body)
	}
	conn.Close() // an open Watch would hold the graceful stop for its grace
	if err := s.wait(t); err != nil {
		t.Errorf("Run() = %v, want nil", err)
	}
}

// Degraded reasons show in /readyz without changing its code: 200
// "degraded" while the probes pass, beside the failing probes when not.
func TestReadyzDegraded(t *testing.T) {
	var reasons atomic.Pointer[[]string]
	reasons.Store(&[]string{})
	p := &fakeProbe{}
	s := start(t, testConfig(), Options{Probes: []Probe{{"snapshot", p.check}},
		Degraded: func() []string { return *reasons.Load() }})
	readyz := "http://" + s.HTTPAddr() + "/readyz"
	for _, step := range []struct {
		name     string
		probe    error
		reasons  []string
		wantCode int
		want     string
	}{
		{"ready, nothing degraded", nil, nil, 200, `{"status":"ok"}`},
		{"ready, degraded", nil, []string{"catalog: connection refused"}, 200, `{"degraded":["catalog: connection refused"],"status":"degraded"}`},
		{"not ready, degraded", errors.New("none"), []string{"model: no policy"}, 503, `{"degraded":["model: no policy"],"failing":["snapshot"],"status":"unavailable","stopping":false}`},
		{"ready again", nil, nil, 200, `{"status":"ok"}`},
	} {
		reasons.Store(&step.reasons)
		p.set(step.probe)
		s.Recheck()
		eventually(t, step.name, func() bool {
			code, b := get(t, readyz)
			return code == step.wantCode && strings.TrimSpace(b) == step.want
		})
	}
}
