package serve

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// lingering is a handler that outlives the grace: it waits for its context
// to be cancelled (the stop cutting it), then keeps working for a while
// before it returns, as a handler finishing a store call would.
type lingering struct {
	entered chan struct{}
	done    atomic.Bool
}

func newLingering() *lingering { return &lingering{entered: make(chan struct{})} }

func (l *lingering) run(ctx context.Context) {
	close(l.entered)
	<-ctx.Done()
	time.Sleep(300 * time.Millisecond)
	l.done.Store(true)
}

// slowService's one method is a lingering handler.
func slowService(l *lingering) *grpc.ServiceDesc {
	return &grpc.ServiceDesc{
		ServiceName: "test.Slow",
		HandlerType: (*any)(nil),
		Methods: []grpc.MethodDesc{{
			MethodName: "Unary",
			Handler: func(_ any, ctx context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
				if err := dec(new(healthpb.HealthCheckRequest)); err != nil {
					return nil, err
				}
				l.run(ctx)
				return &healthpb.HealthCheckResponse{}, nil
			},
		}},
	}
}

// Run returns only after every handler has, also those the grace cut
// short, so a service may close its store once Run has returned.
func TestRunWaitsForHandlersCutAtTheGrace(t *testing.T) {
	cfg := testConfig()
	cfg.ShutdownGrace = 100 * time.Millisecond
	httpH, grpcH := newLingering(), newLingering()
	s, err := New(cfg, Options{GRPCAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0",
		Handler: http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) { httpH.run(r.Context()) }),
	}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatalf("New() = %v", err)
	}
	s.RegisterService(slowService(grpcH), nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()

	conn := dial(t, s.GRPCAddr())
	go func() { // fails when the stop cuts it
		_ = conn.Invoke(context.Background(), "/test.Slow/Unary", &healthpb.HealthCheckRequest{}, &healthpb.HealthCheckResponse{})
	}()
	go func() {
		c := http.Client{Timeout: time.Minute}
		if resp, err := c.Get("http://" + s.HTTPAddr() + "/slow"); err == nil {
			resp.Body.Close()
		}
	}()
	<-grpcH.entered
	<-httpH.entered
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run() = %v, want nil", err)
		}
	case <-time.After(time.Minute):
		t.Fatal("Run() did not return within a minute of cancellation")
	}
	if !grpcH.done.Load() {
		t.Error("Run returned while a gRPC handler was still running")
	}
	if !httpH.done.Load() {
		t.Error("Run returned while an HTTP handler was still running")
	}
}

// Once the stop has waited for the HTTP handlers, a request that still
// reaches the handler chain is refused without running the service's code.
func TestInflightRefusesAfterClose(t *testing.T) {
	f := NewInflight()
	ran := false
	h := f.Track(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { ran = true }), nil)
	f.CloseAndWait()
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest("GET", "/x", nil))
	if ran || w.Code != http.StatusServiceUnavailable {
		t.Errorf("request after closeAndWait: handler ran = %v, status %d, want not run and 503", ran, w.Code)
	}
}
