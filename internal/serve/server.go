// Package serve is the runtime every service runs on: a gRPC and an HTTP
// listener with bounds on what one client can hold (streams per connection,
// connections, idle and keep-alive time), panic recovery on both, gRPC
// health and /readyz driven by readiness probes, /livez and /metrics, and a
// bounded stop that turns NOT_SERVING first.
package serve

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/net/netutil"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/reflection"
)

// Options are what a service brings to its Server beside the shared Config.
type Options struct {
	GRPCAddr string // host:port; port 0 picks a free one
	HTTPAddr string // host:port; port 0 picks a free one
	// Handler serves every HTTP path but /livez, /readyz and /metrics,
	// which the Server answers itself. Nil: a JSON 404 for every other path.
	Handler http.Handler
	// Gatherer is exposed at /metrics. Nil: a registry of its own with the
	// Go and process collectors.
	Gatherer prometheus.Gatherer
	// Probes decide readiness; none means always ready while running.
	Probes []Probe
	// Degraded, when set, lists the reasons a service that takes traffic
	// is serving in a reduced way (a source it follows is failing and it
	// serves what it last had). /readyz shows them: 200 with status
	// "degraded" while ready, and beside the failing probes when not.
	// Reasons are shown to anyone who can reach /readyz: no secrets.
	Degraded func() []string
	// MaxRecvMsgSize bounds one received gRPC message, in bytes; 0 keeps
	// grpc-go's 4 MiB.
	MaxRecvMsgSize int
	// LogAttrs are added to the "serving" line Run logs (key, value pairs).
	LogAttrs []any
	// GRPCOptions are appended to the Server's own (a codec, stream
	// workers, more interceptors: they run inside panic recovery).
	GRPCOptions []grpc.ServerOption
}

// Server is a service's runtime. New binds both listeners, so the
// addresses are known before Run; the service then registers its gRPC
// services (Server is a grpc.ServiceRegistrar) and calls Run once. A Server
// whose Run is never called must be closed with Close.
type Server struct {
	cfg      Config
	log      *slog.Logger
	degraded func() []string
	grpc     *grpc.Server
	health   *health.Server
	http     *http.Server
	ready    *readiness
	attrs    []any
	// handlers counts the HTTP handlers running; grpc-go counts its own
	// (WaitForHandlers).
	handlers *Inflight

	grpcLis, httpLis net.Listener
}

var _ grpc.ServiceRegistrar = (*Server)(nil)

// New validates cfg and binds opts' addresses.
func New(cfg Config, opts Options, logger *slog.Logger) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, log: logger, attrs: opts.LogAttrs, handlers: NewInflight(), degraded: opts.Degraded}
	grpcLis, err := net.Listen("tcp", opts.GRPCAddr)
	if err != nil {
		return nil, fmt.Errorf("grpc listen: %w", err)
	}
	httpLis, err := net.Listen("tcp", opts.HTTPAddr)
	if err != nil {
		grpcLis.Close()
		return nil, fmt.Errorf("http listen: %w", err)
	}
	s.grpcLis = netutil.LimitListener(grpcLis, cfg.MaxConnections)
	s.httpLis = netutil.LimitListener(httpLis, cfg.MaxConnections)
	s.grpc = grpc.NewServer(s.grpcOptions(opts)...)
	s.health = health.NewServer()
	s.ready = newReadiness(opts.Probes, logger, s.publish)
	healthpb.RegisterHealthServer(s.grpc, s.health)
	reflection.Register(s.grpc) // lets grpcurl list and call the API
	s.http = &http.Server{
		Handler:           s.httpHandler(opts),
		ReadHeaderTimeout: cfg.HTTPReadHeaderTimeout,
		ReadTimeout:       cfg.HTTPReadTimeout,
		WriteTimeout:      cfg.HTTPWriteTimeout,
		IdleTimeout:       cfg.HTTPIdleTimeout,
		MaxHeaderBytes:    headerReserve * cfg.HTTPMaxHeaderBytes, // limitHeaders enforces the configured bound
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}
	return s, nil
}

func (s *Server) grpcOptions(opts Options) []grpc.ServerOption {
	o := []grpc.ServerOption{
		grpc.MaxConcurrentStreams(uint32(s.cfg.GRPCMaxConcurrentStreams)),
		grpc.KeepaliveParams(keepalive.ServerParameters{
			MaxConnectionIdle: s.cfg.GRPCMaxConnectionIdle,
			Time:              s.cfg.GRPCKeepaliveTime,
			Timeout:           s.cfg.GRPCKeepaliveTimeout,
		}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{
			MinTime:             s.cfg.GRPCMinPingInterval,
			PermitWithoutStream: true, // Envoy may ping a connection with no call open
		}),
		grpc.ChainUnaryInterceptor(s.recoverUnary),
		grpc.ChainStreamInterceptor(s.recoverStream),
		// Stop (at the end of the grace) returns only once every handler
		// has, so Run's caller may then close what the handlers use. (The
		// GracefulStop that stop also waits for does so already; this keeps
		// Stop alone safe.)
		grpc.WaitForHandlers(true),
	}
	if opts.MaxRecvMsgSize > 0 {
		o = append(o, grpc.MaxRecvMsgSize(opts.MaxRecvMsgSize))
	}
	return append(o, opts.GRPCOptions...)
}

func (s *Server) httpHandler(opts Options) http.Handler {
	g := opts.Gatherer
	if g == nil {
		reg := prometheus.NewRegistry()
		reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
		g = reg
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /livez", func(w http.ResponseWriter, _ *http.Request) {
		WriteJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("GET /readyz", s.readyz)
	mux.Handle("GET /metrics", promhttp.HandlerFor(g, promhttp.HandlerOpts{}))
	if opts.Handler != nil {
		mux.Handle("/", opts.Handler)
	} else {
		mux.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) {
			WriteJSON(w, http.StatusNotFound, ErrorBody{Error: "not_found", Message: "no such endpoint"})
		})
	}
	return s.handlers.Track(s.recoverHTTP(limitHeaders(s.cfg.HTTPMaxHeaderBytes, mux)), nil)
}

// RegisterService registers a gRPC service; call it before Run.
func (s *Server) RegisterService(desc *grpc.ServiceDesc, impl any) {
	s.grpc.RegisterService(desc, impl)
}

// GRPCAddr is the bound gRPC address.
func (s *Server) GRPCAddr() string { return s.grpcLis.Addr().String() }

// HTTPAddr is the bound HTTP address.
func (s *Server) HTTPAddr() string { return s.httpLis.Addr().String() }

// Recheck runs the readiness probes now rather than at the next interval,
// without waiting: a service calls it when a call has just failed in a way
// a probe would see (the store is down), so health follows at once.
func (s *Server) Recheck() { s.ready.recheck() }

// Close releases the listeners of a Server that will not Run.
func (s *Server) Close() {
	s.grpcLis.Close()
	s.httpLis.Close()
}

// Run serves until ctx ends. It runs the probes once before it serves, so
// the first health answer is already the probes'. Then, at the end: health
// turns NOT_SERVING and /readyz 503, the listeners stay open for
// ShutdownDelay, then both servers stop gracefully within ShutdownGrace
// (calls still open then are cut: their contexts are cancelled). Run
// returns only after every gRPC and HTTP handler has returned, so the
// caller may then close what handlers use (a store); a handler that
// ignores its context holds Run up. It returns nil after a clean stop, or
// the error that made a server fail.
func (s *Server) Run(ctx context.Context) error {
	s.ready.runOnce(ctx, s.cfg.ReadinessTimeout) // publishes the first outcome
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return s.watchReadiness(gctx) })
	g.Go(func() error {
		// ErrServerStopped: the stop came before Serve began.
		if err := s.grpc.Serve(s.grpcLis); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			return fmt.Errorf("grpc serve: %w", err)
		}
		return nil
	})
	g.Go(func() error {
		if err := s.http.Serve(s.httpLis); err != nil && !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("http serve: %w", err)
		}
		return nil
	})
	g.Go(func() error {
		<-gctx.Done()
		return s.stop()
	})
	s.log.Info("serving", append([]any{KeyGRPCAddr, s.GRPCAddr(), KeyHTTPAddr, s.HTTPAddr()}, s.attrs...)...)
	return g.Wait()
}

// stop turns NOT_SERVING, waits ShutdownDelay, then stops both servers
// within ShutdownGrace, cutting what is still open then, and waits for
// every handler to return.
func (s *Server) stop() error {
	// Every service NOT_SERVING, later updates ignored, and /readyz 503,
	// together.
	s.ready.stop(s.health.Shutdown)
	time.Sleep(s.cfg.ShutdownDelay)
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.ShutdownGrace)
	defer cancel()
	stopped := make(chan struct{})
	go func() {
		s.grpc.GracefulStop()
		close(stopped)
	}()
	err := s.http.Shutdown(ctx)
	if err != nil {
		s.http.Close()
	}
	select {
	case <-stopped:
	case <-ctx.Done():
		s.grpc.Stop() // waits for the handlers (WaitForHandlers)
		<-stopped
	}
	s.handlers.CloseAndWait()
	if err != nil {
		s.log.Warn("graceful stop cut requests still open", KeyError, err.Error())
	}
	return nil
}
