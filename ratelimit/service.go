package ratelimit

import (
	"context"
	"log/slog"
	"runtime"
	"sync/atomic"
	"time"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/leakytokens/leaky/internal/serve"
	"github.com/leakytokens/leaky/internal/xdsconfig"
	"github.com/leakytokens/leaky/ratelimit/ledger"
	"github.com/leakytokens/leaky/ratelimit/store"
)

// maxRecvMsg bounds one rate-limit request (descriptors × entries ×
// values); maxExtProcMsg bounds any message on the listener, which carries
// the metering's ext_proc messages too: a whole request body up to the
// gateway's largest max_request_bytes (8 MiB) and its headers.
const (
	maxRecvMsg    = 256 << 10
	maxExtProcMsg = 8<<20 + 256<<10
)

// Service is the rate-limit service. Build it with New, then Run it.
type Service struct {
	cfg     Config
	log     *slog.Logger
	store   store.Store // owned: closed when the service ends
	limits  atomic.Pointer[limits]
	metrics *metrics
	health  storeHealth
	reserve *Reservations
	// record is the durable record (ledger): settled usage, sagas, the
	// outbox, and the quota state the store's counters are rebuilt from.
	// Nil until SetLedger: quotas then seed from zero and nothing is
	// recorded.
	record ledger.Ledger
	usages *usageWriter // writes settled usage to record
	// now is the clock quota windows are planned by; nil is time.Now.
	// Tests set it to cross a window's boundary.
	now    func() time.Time
	srv    *serve.Server
	tokens *tokenAPI             // the token API, /api/v1/tokens/* on the HTTP listener
	xds    *xdsconfig.Subscriber // nil unless cfg.ConfigXDS is set

	storeLog *serve.Throttle // store errors: one line a second
}

// New validates cfg, loads the configuration (a bad file is an error naming
// it) and binds both listeners, so the addresses are known before Run. It
// decides on st, the store cmd/leaky opened from cfg (the service never
// opens one; see storecaps.go for what else it uses of st when st offers
// it), and takes ownership of it: Run's end or Close closes st, and so does
// New when it fails. With cfg.ConfigXDS it also builds the subscriber
// that Run starts in place of the file watcher.
func New(cfg Config, logger *slog.Logger, st store.Store) (*Service, error) {
	if err := cfg.Validate(); err != nil {
		closeStore(st)
		return nil, err
	}
	l, err := loadLimits(cfg.ConfigPath, cfg.ruleOptions())
	if err != nil {
		closeStore(st)
		return nil, err
	}
	s := &Service{cfg: cfg, log: logger, store: st, storeLog: serve.NewThrottle(time.Second)}
	s.limits.Store(l)
	s.metrics = newMetrics(s.evictions)
	s.metrics.configOK.Inc()
	if cfg.ConfigXDS != "" {
		s.xds, err = s.newSubscriber(l.snap)
		if err != nil {
			closeStore(st)
			return nil, err
		}
	}
	s.reserve = NewReservations(s.store, nil, func() time.Duration {
		if p := s.limits.Load().policy; p != nil {
			return time.Duration(p.ReservationTTL)
		}
		return DefaultReservationTTL
	})
	s.usages = newUsageWriter(logger, recordQueue)
	s.reserve.SetRecorder(s.recordSettlement)
	s.metrics.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "ratelimit_reservations_unrecorded_total",
		Help: "Admitted charges left at their estimate without a settlement: a reservation record the store handed back that could not be decoded.",
	}, func() float64 { return float64(s.reserve.Unrecorded()) }))
	s.tokens = newTokenAPI(s)
	if s.srv, err = s.newServer(); err != nil {
		s.closeStore()
		return nil, err
	}
	s.health = storeHealth{s.srv}
	return s, nil
}

// newServer builds the runtime: the RateLimitService on gRPC, the store as
// the readiness probe, the service's metrics at /metrics.
func (s *Service) newServer() (*serve.Server, error) {
	srv, err := serve.New(s.cfg.Config, serve.Options{
		GRPCAddr:       s.cfg.GRPCAddr,
		HTTPAddr:       s.cfg.HTTPAddr,
		Gatherer:       s.metrics.reg,
		Handler:        s.tokens.handler(),
		Probes:         []serve.Probe{s.storeProbe()},
		Degraded:       s.xds.Degraded,
		MaxRecvMsgSize: maxExtProcMsg,
		LogAttrs:       []any{serve.KeyStore, s.cfg.Store},
		GRPCOptions: []grpc.ServerOption{
			grpc.ForceServerCodec(lenientCodec{}),
			// Reuse goroutines for calls instead of one new goroutine (and
			// its stack growth) per call. gRPC hands a call to a worker
			// only when one is waiting, else starts a goroutine: with one
			// worker per core nearly every call of a busy server (64 calls
			// in flight) got a new one; 64 workers took 4–8 µs of CPU off
			// each decision (make bench, 2 cores).
			grpc.NumStreamWorkers(uint32(max(streamWorkers, runtime.GOMAXPROCS(0)))),
			grpc.ChainUnaryInterceptor(boundRateLimitRequest),
		},
	}, s.log)
	if err != nil {
		return nil, err
	}
	rlsv3.RegisterRateLimitServiceServer(srv, s)
	extprocv3.RegisterExternalProcessorServer(srv, meter{s})
	return srv, nil
}

// SetLedger sets the durable record the service writes settled usage and
// purchases to and rebuilds quota counters from. Call it before Run.
func (s *Service) SetLedger(l ledger.Ledger) { s.record = l }

// Registerer is the registry the service's /metrics serves, for what
// cmd/leaky runs beside it (the outbox relay).
func (s *Service) Registerer() prometheus.Registerer { return s.metrics.reg }

// ledgerSagas is the ledger's saga side, nil without a ledger.
func (s *Service) ledgerSagas() ledger.Sagas {
	if s.record == nil {
		return nil
	}
	return s.record
}

// streamWorkers is the least number of goroutines kept to serve calls.
const streamWorkers = 64

// boundRateLimitRequest refuses a rate-limit request larger than
// maxRecvMsg with RESOURCE_EXHAUSTED, as the transport did before the
// listener's bound was raised for the metering's request bodies.
func boundRateLimitRequest(ctx context.Context, req any, _ *grpc.UnaryServerInfo, next grpc.UnaryHandler) (any, error) {
	if r, ok := req.(*rlsv3.RateLimitRequest); ok && proto.Size(r) > maxRecvMsg {
		return nil, status.Errorf(codes.ResourceExhausted, "rate-limit request larger than %d bytes", maxRecvMsg)
	}
	return next(ctx, req)
}

// GRPCAddr is the bound gRPC address.
func (s *Service) GRPCAddr() string { return s.srv.GRPCAddr() }

// HTTPAddr is the bound HTTP address.
func (s *Service) HTTPAddr() string { return s.srv.HTTPAddr() }

// Reservations is the service's reservation ledger (reserve now, settle at
// the actual amount later).
func (s *Service) Reservations() *Reservations { return s.reserve }

// Close releases a service that will not Run: its listeners and store.
func (s *Service) Close() {
	s.srv.Close()
	s.closeStore()
}

func (s *Service) closeStore() { closeStore(s.store) }

// Run serves until ctx is cancelled, following configuration changes from
// the one source configured (the control plane, or the -config path), then
// stops as the runtime does: health turns NOT_SERVING first, in-flight
// calls finish within ShutdownGrace, and the store closes last.
func (s *Service) Run(ctx context.Context) error {
	defer s.closeStore()
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return s.watchConfig(gctx) })
	g.Go(func() error { return s.reserve.Run(gctx) })
	g.Go(func() error { return s.usages.run(gctx) })
	g.Go(func() error { return s.tokens.sagas.run(gctx) })
	if r, ok := s.store.(runner); ok {
		g.Go(func() error { return r.Run(gctx) })
	}
	g.Go(func() error { return s.srv.Run(gctx) })
	return g.Wait()
}
