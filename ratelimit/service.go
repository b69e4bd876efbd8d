package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"sync/atomic"
	"time"

	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"

	"github.com/leakytokens/leaky/ratelimit/store"
)

// maxRecvMsg bounds one gRPC request (descriptors × entries × values).
const maxRecvMsg = 256 << 10

// Service is the rate-limit service. Build it with New, then Run it.
type Service struct {
	cfg     Config
	log     *slog.Logger
	store   store.Store // owned: closed when the service ends
	limits  atomic.Pointer[limits]
	metrics *metrics
	health  *healthState
	reserve *Reservations

	lastStoreLog atomic.Int64 // unix ns of the last store error logged

	grpcLis, httpLis net.Listener
}

// New validates cfg, loads the configuration (a bad file is an error naming
// it) and binds both listeners, so the addresses are known before Run. It
// decides on st, the store cmd/leaky opened from cfg (the service never
// opens one; see storecaps.go for what else it uses of st when st offers
// it), and takes ownership of it: Run's end or Close closes st, and so does
// New when it fails.
func New(ctx context.Context, cfg Config, logger *slog.Logger, st store.Store) (*Service, error) {
	if err := cfg.Validate(); err != nil {
		closeStore(st)
		return nil, err
	}
	l, err := loadLimits(cfg.ConfigPath)
	if err != nil {
		closeStore(st)
		return nil, err
	}
	s := &Service{cfg: cfg, log: logger, store: st}
	s.limits.Store(l)
	s.metrics = newMetrics(s.evictions)
	s.metrics.configOK.Inc()
	s.health = newHealthState(s.ping)
	s.reserve = NewReservations(s.store, nil, func() time.Duration {
		if p := s.limits.Load().policy; p != nil {
			return time.Duration(p.ReservationTTL)
		}
		return DefaultReservationTTL
	})
	if s.grpcLis, err = net.Listen("tcp", cfg.GRPCAddr); err != nil {
		s.close()
		return nil, fmt.Errorf("grpc listen: %w", err)
	}
	if s.httpLis, err = net.Listen("tcp", cfg.HTTPAddr); err != nil {
		s.close()
		return nil, fmt.Errorf("http listen: %w", err)
	}
	return s, nil
}

// GRPCAddr is the bound gRPC address.
func (s *Service) GRPCAddr() string { return s.grpcLis.Addr().String() }

// HTTPAddr is the bound HTTP address.
func (s *Service) HTTPAddr() string { return s.httpLis.Addr().String() }

// Reservations is the service's reservation ledger (reserve now, settle at
// the actual amount later).
func (s *Service) Reservations() *Reservations { return s.reserve }

// Close releases a service that will not Run: its listeners and store.
func (s *Service) Close() { s.close() }

func (s *Service) close() {
	if s.grpcLis != nil {
		s.grpcLis.Close()
	}
	if s.httpLis != nil {
		s.httpLis.Close()
	}
	closeStore(s.store)
}

// recoverPanic turns a panic in a handler — a bug — into an INTERNAL answer
// for that call instead of the end of the process (grpc-go does not recover).
func (s *Service) recoverPanic(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (resp any, err error) {
	defer func() {
		if r := recover(); r != nil {
			s.log.Error("handler panicked", "method", info.FullMethod, "panic", fmt.Sprint(r))
			resp, err = nil, status.Error(codes.Internal, "internal error")
		}
	}()
	return handler(ctx, req)
}

// Run serves until ctx is cancelled, then stops gracefully: health turns
// NOT_SERVING first, in-flight calls finish within ShutdownGrace.
func (s *Service) Run(ctx context.Context) error {
	defer s.close()
	gs := grpc.NewServer(
		grpc.MaxRecvMsgSize(maxRecvMsg),
		grpc.ForceServerCodec(lenientCodec{}),
		// Reuse a few goroutines for calls instead of one new goroutine (and
		// stack growth) per call: a measurable share of a decision's CPU.
		grpc.NumStreamWorkers(uint32(runtime.GOMAXPROCS(0))),
		grpc.ChainUnaryInterceptor(s.recoverPanic),
	)
	rlsv3.RegisterRateLimitServiceServer(gs, s)
	hs := health.NewServer()
	healthpb.RegisterHealthServer(gs, hs)
	reflection.Register(gs) // lets grpcurl list and call the API
	hsrv := &http.Server{Handler: s.httpHandler(), ReadHeaderTimeout: 5 * time.Second, MaxHeaderBytes: 16 << 10}

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return s.health.run(gctx, hs) })
	g.Go(func() error { return s.watchConfig(gctx) })
	g.Go(func() error { return s.reserve.Run(gctx) })
	if r, ok := s.store.(runner); ok {
		g.Go(func() error { return r.Run(gctx) })
	}
	g.Go(func() error {
		if err := gs.Serve(s.grpcLis); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			return fmt.Errorf("grpc serve: %w", err)
		}
		return nil
	})
	g.Go(func() error {
		if err := hsrv.Serve(s.httpLis); err != nil && !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("http serve: %w", err)
		}
		return nil
	})
	g.Go(func() error {
		<-gctx.Done()
		hs.Shutdown() // every service NOT_SERVING before the listeners close
		s.health.shutdown()
		stopped := make(chan struct{})
		go func() { gs.GracefulStop(); close(stopped) }()
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.ShutdownGrace)
		defer cancel()
		select {
		case <-stopped:
		case <-sctx.Done():
			gs.Stop()
		}
		return hsrv.Shutdown(sctx)
	})
	s.log.Info("ratelimit serving", "grpc", s.GRPCAddr(), "http", s.HTTPAddr(), "store", s.cfg.Store)
	return g.Wait()
}
