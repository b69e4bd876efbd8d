package authz

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"sync/atomic"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/ory/fosite"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/leakytokens/leaky/authz/store"
	"github.com/leakytokens/leaky/internal/policy"
)

// Service is the authz service: ext_authz over gRPC plus the HTTP API.
// New binds both listeners (so GRPCAddr and HTTPAddr are known at once);
// Run serves until its context ends and releases everything. A Service
// whose Run is never called must be closed with Close.
type Service struct {
	cfg        Config
	logger     *slog.Logger
	store      store.Store
	policy     atomic.Pointer[policy.Policy]
	ring       *keyRing
	tokens     *tokens
	keys       *keyVerifier
	hasher     passwordHasher
	oauth      fosite.OAuth2Provider
	fstore     *fositeStore
	strategy   *accessTokenStrategy
	reg        *prometheus.Registry
	metrics    *metrics
	admin      AdminCredentials
	storeOK    atomic.Bool
	policyPoll time.Duration // how often the policy file is checked for changes
	// dummyHash is verified against for unknown usernames.
	dummyHash string

	grpcLn, httpLn net.Listener
	grpcServer     *grpc.Server
	health         *health.Server
	httpServer     *http.Server
}

// AdminCredentials names the bootstrap admin. Password is set only when
// the service generated it at this start; it is never logged, so the
// caller shows it once.
type AdminCredentials struct {
	Username string
	Password string
}

// New loads or creates the signing keys in st, bootstraps the admin and
// binds the listeners. st is the store cmd/leaky opened from cfg
// (PostgreSQL with migrations applied, or memory); the service never opens
// one. New takes ownership of st: Run's end or Close closes it, and so does
// New when it fails. The logger never receives secrets.
func New(cfg Config, logger *slog.Logger, st store.Store) (*Service, error) {
	if err := cfg.Validate(); err != nil {
		st.Close()
		return nil, fmt.Errorf("authz config: %w", err)
	}
	pol, err := loadPolicy(cfg.PolicyPath)
	if err != nil {
		st.Close()
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := newService(ctx, cfg, logger, st, pol)
	if err != nil {
		st.Close()
		return nil, err
	}
	return s, nil
}

func newService(ctx context.Context, cfg Config, logger *slog.Logger, st store.Store, pol *policy.Policy) (*Service, error) {
	s := &Service{cfg: cfg, logger: logger, store: st, reg: prometheus.NewRegistry(),
		hasher: newPasswordHasher(uint32(cfg.Argon2MemoryKiB), uint32(cfg.Argon2Time), 2*runtime.GOMAXPROCS(0))}
	var err error
	// Logins for unknown users verify against this, costing what a real
	// verification costs.
	if s.dummyHash, err = s.hasher.hash(ctx, newUUID()); err != nil {
		return nil, err
	}
	s.policy.Store(pol)
	s.policyPoll = time.Second
	s.storeOK.Store(true)
	s.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	s.metrics = newMetrics(s.reg)
	secret := cfg.SigningSecret
	if secret == "" {
		var b [32]byte
		_, _ = rand.Read(b[:])
		secret = base64.RawURLEncoding.EncodeToString(b[:])
		logger.Warn("no signing secret configured: using a random one; tokens will not survive a restart")
	}
	// A superseded key verifies until every token it signed has expired.
	ring, err := newKeyRing(st, secret, cfg.KeyRotation, 2*cfg.KeyRefresh, cfg.TokenTTL+time.Minute)
	if err != nil {
		return nil, err
	}
	if err := ring.refresh(ctx); err != nil {
		return nil, err
	}
	s.ring = ring
	s.tokens = newTokens(ring, cfg.Issuer, cfg.Audience, cfg.TokenTTL, 30*time.Second, time.Now)
	s.keys = newKeyVerifier(st, cfg.APIKeyCacheTTL, cfg.APIKeyCacheSize, cfg.CheckTimeout, time.Now)
	s.oauth, s.fstore, s.strategy = newOAuth(cfg, st, s.tokens, secret)
	if err := s.bootstrapAdmin(ctx); err != nil {
		return nil, err
	}
	if err := s.listen(); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *Service) listen() error {
	var err error
	if s.grpcLn, err = net.Listen("tcp", s.cfg.GRPCAddr); err != nil {
		return fmt.Errorf("listen grpc: %w", err)
	}
	if s.httpLn, err = net.Listen("tcp", s.cfg.HTTPAddr); err != nil {
		s.grpcLn.Close()
		return fmt.Errorf("listen http: %w", err)
	}
	// Stream workers avoid a goroutine (and its stack growth) per Check.
	s.grpcServer = grpc.NewServer(grpc.NumStreamWorkers(uint32(runtime.GOMAXPROCS(0))))
	s.health = health.NewServer()
	authv3.RegisterAuthorizationServer(s.grpcServer, &checkServer{
		tokens: s.tokens, keys: s.keys, policy: &s.policy, cfg: &s.cfg, metrics: s.metrics, logger: s.logger,
	})
	healthpb.RegisterHealthServer(s.grpcServer, s.health)
	s.health.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	s.health.SetServingStatus(authv3.Authorization_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_SERVING)
	s.httpServer = &http.Server{
		Handler:           s.routes(),
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(s.logger.Handler(), slog.LevelWarn),
	}
	return nil
}

// GRPCAddr is the bound ext_authz address.
func (s *Service) GRPCAddr() string { return s.grpcLn.Addr().String() }

// HTTPAddr is the bound HTTP address.
func (s *Service) HTTPAddr() string { return s.httpLn.Addr().String() }

// Admin returns the bootstrap admin's credentials (see AdminCredentials).
func (s *Service) Admin() AdminCredentials { return s.admin }

// Close releases the listeners and the store of a Service that never ran.
func (s *Service) Close() {
	s.grpcLn.Close()
	s.httpLn.Close()
	s.store.Close()
}

// Run serves gRPC and HTTP, reloads the signing keys every KeyRefresh,
// probes the store every second, reloads a changed policy file and purges
// expired token records every ten minutes, until ctx ends. Then health goes
// NOT_SERVING, both servers drain within ShutdownGrace, and the store
// closes. It returns nil after a clean shutdown.
func (s *Service) Run(ctx context.Context) error {
	defer s.store.Close()
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		// ErrServerStopped: the stop came before Serve began (a quick cancel).
		if err := s.grpcServer.Serve(s.grpcLn); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			return fmt.Errorf("grpc: %w", err)
		}
		return nil
	})
	g.Go(func() error {
		if err := s.httpServer.Serve(s.httpLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("http: %w", err)
		}
		return nil
	})
	g.Go(func() error { s.every(gctx, s.cfg.KeyRefresh, s.refreshKeys); return nil })
	g.Go(func() error { s.every(gctx, time.Second, s.probeStore); return nil })
	g.Go(func() error { s.watchPolicy(gctx, s.policyPoll); return nil })
	g.Go(func() error { s.every(gctx, 10*time.Minute, s.purgeTokens); return nil })
	g.Go(func() error {
		<-gctx.Done()
		s.shutdown()
		return nil
	})
	s.logger.Info("authz serving", "grpc_addr", s.GRPCAddr(), "http_addr", s.HTTPAddr())
	return g.Wait()
}

func (s *Service) shutdown() {
	s.health.Shutdown() // NOT_SERVING first, so Envoy stops sending
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.ShutdownGrace)
	defer cancel()
	done := make(chan struct{})
	go func() {
		s.grpcServer.GracefulStop()
		close(done)
	}()
	if err := s.httpServer.Shutdown(ctx); err != nil {
		s.httpServer.Close()
	}
	select {
	case <-done:
	case <-ctx.Done():
		s.grpcServer.Stop()
		<-done
	}
}

func (s *Service) every(ctx context.Context, d time.Duration, f func(context.Context)) {
	t := time.NewTicker(d)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			f(ctx)
		}
	}
}

func (s *Service) refreshKeys(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := s.ring.refresh(ctx); err != nil {
		s.logger.Warn("signing key refresh failed; the previous key set keeps serving", "error", err.Error())
	}
}

// probeStore pings the store under the Check deadline and records the
// outcome for /readyz.
func (s *Service) probeStore(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.CheckTimeout)
	defer cancel()
	err := s.store.Ping(ctx)
	if was := s.storeOK.Swap(err == nil); was != (err == nil) {
		if err != nil {
			s.logger.Warn("store unavailable", "error", err.Error())
		} else {
			s.logger.Info("store available again")
		}
	}
}

// purgeTokens deletes OAuth2 token records that expired over an hour ago.
func (s *Service) purgeTokens(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if n, err := s.store.PurgeTokens(ctx, time.Now().Add(-time.Hour)); err != nil {
		s.logger.Warn("token purge failed", "error", err.Error())
	} else if n > 0 {
		s.logger.Info("purged expired tokens", "count", n)
	}
}

// bootstrapAdmin creates the configured admin account when no user has its
// name. It never touches an existing account: a user who registered the
// name first gets no role from it, and an admin whose ADMIN role was revoked
// does not get it back at the next start. When the account cannot be
// created (its email is taken) it warns and reports no password.
func (s *Service) bootstrapAdmin(ctx context.Context) error {
	name := s.cfg.AdminUsername
	if name == "" {
		return nil
	}
	s.admin.Username = name
	if _, err := s.store.UserByUsername(ctx, name); err == nil {
		return nil
	} else if !errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("bootstrap admin: %w", err)
	}
	pw := s.cfg.AdminPassword
	if pw == "" {
		var b [18]byte
		_, _ = rand.Read(b[:])
		pw = base64.RawURLEncoding.EncodeToString(b[:])
		s.admin.Password = pw
	}
	hash, err := s.hasher.hash(ctx, pw)
	if err != nil {
		return fmt.Errorf("bootstrap admin: %w", err)
	}
	u := store.User{ID: newUUID(), Username: name, Email: s.cfg.AdminEmail, PasswordHash: hash,
		Roles: []string{store.RoleUser, store.RoleAdmin}, CreatedAt: time.Now().UTC().Truncate(time.Microsecond)}
	if err := s.store.CreateUser(ctx, u); errors.Is(err, store.ErrConflict) {
		// Another replica created it meanwhile, or its email is taken.
		s.admin.Password = ""
		s.logger.Warn("bootstrap admin not created: username or email already taken", "username", name)
		return nil
	} else if err != nil {
		return fmt.Errorf("bootstrap admin: %w", err)
	}
	s.logger.Info("bootstrap admin created", "username", name, "password_generated", s.admin.Password != "")
	return nil
}

// newUUID returns a random (version 4) UUID.
func newUUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
}
