package authz

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"

	"github.com/leakytokens/leaky/authz/extauthz"
	"github.com/leakytokens/leaky/authz/keyauth"
	"github.com/leakytokens/leaky/authz/keyring"
	"github.com/leakytokens/leaky/authz/oauth"
	"github.com/leakytokens/leaky/authz/store"
	"github.com/leakytokens/leaky/internal/policy"
	"github.com/leakytokens/leaky/internal/serve"
	"github.com/leakytokens/leaky/internal/xdsconfig"
)

// Service is the authz service: ext_authz over gRPC plus the HTTP API.
// New binds both listeners (so GRPCAddr and HTTPAddr are known at once);
// Run serves until its context ends and releases everything. A Service
// whose Run is never called must be closed with Close.
type Service struct {
	cfg     Config
	logger  *slog.Logger
	store   store.Store
	policy  atomic.Pointer[policy.Policy]
	ring    *keyring.Ring
	tokens  *keyring.Tokens
	keys    *keyauth.Verifier
	hasher  passwordHasher
	oauth   *oauth.Provider
	checks  *extauthz.Server
	reg     *prometheus.Registry
	metrics *metrics
	admin   AdminCredentials
	// dummyHash is verified against for unknown usernames.
	dummyHash string

	// policyMu serialises applyPolicy; policyDigest is the digest of the
	// snapshot it applied last (zero: none, the policy New loaded).
	policyMu     sync.Mutex
	policyDigest [sha256.Size]byte
	xds          *xdsconfig.Subscriber // nil unless cfg.ConfigXDS is set

	srv     *serve.Server
	handler http.Handler // the HTTP API behind the runtime's own routes
}

// AdminCredentials names the bootstrap admin. Password is set only when
// the service generated it at this start; it is never logged, so the
// caller shows it once.
type AdminCredentials struct {
	Username string
	Password string
}

// New loads or creates the signing keys in st, bootstraps the admin and
// binds the listeners. Its store I/O and password hashing run under ctx,
// bounded by startTimeout: cancelling ctx (a signal during startup) makes
// New fail at once with ctx's error. st is the store cmd/leaky opened from
// cfg (PostgreSQL with migrations applied, or memory); the service never
// opens one. New takes ownership of st: Run's end or Close closes it, and
// so does New when it fails. The logger never receives secrets.
func New(ctx context.Context, cfg Config, logger *slog.Logger, st store.Store) (*Service, error) {
	return newWithHooks(ctx, cfg, logger, st, hooks{})
}

// policyPoll is how often Run checks the policy file for changes.
const policyPoll = time.Second

// startTimeout bounds New's startup I/O: loading or creating the signing
// keys and bootstrapping the admin.
const startTimeout = 30 * time.Second

// hooks are what a test may change in a Service that New builds: the API
// key cache's clock, and a Check store deadline beyond the one Validate
// allows (a loaded test machine misses 150 ms now and then).
type hooks struct {
	keyClock     func() time.Time // nil: time.Now
	checkTimeout time.Duration    // 0: cfg.CheckTimeout
}

// newWithHooks is New with h applied after cfg is validated.
func newWithHooks(ctx context.Context, cfg Config, logger *slog.Logger, st store.Store, h hooks) (*Service, error) {
	if err := cfg.Validate(); err != nil {
		st.Close()
		return nil, fmt.Errorf("authz config: %w", err)
	}
	pol, err := loadPolicy(cfg.PolicyPath)
	if err != nil {
		st.Close()
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, startTimeout)
	defer cancel()
	s, err := newService(ctx, cfg, logger, st, pol, h)
	if err != nil {
		st.Close()
		return nil, err
	}
	return s, nil
}

func newService(ctx context.Context, cfg Config, logger *slog.Logger, st store.Store, pol *policy.Policy, h hooks) (*Service, error) {
	if h.checkTimeout > 0 {
		cfg.CheckTimeout = h.checkTimeout
	}
	hashers := cfg.PasswordHashers
	if hashers == 0 {
		hashers = defaultHashers(runtime.GOMAXPROCS(0))
	}
	s := &Service{cfg: cfg, logger: logger, store: st, reg: prometheus.NewRegistry(),
		hasher: newPasswordHasher(uint32(cfg.Argon2MemoryKiB), uint32(cfg.Argon2Time), hashers, cfg.PasswordHashQueue)}
	var err error
	// Logins for unknown users verify against this, costing what a real
	// verification costs.
	if s.dummyHash, err = s.hasher.hash(ctx, uuid.NewString()); err != nil {
		return nil, err
	}
	s.policy.Store(pol)
	s.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	s.metrics = newMetrics(s.reg)
	if err := s.subscribe(); err != nil {
		return nil, err
	}
	secret := cfg.SigningSecret
	if secret == "" {
		var b [32]byte
		_, _ = rand.Read(b[:])
		secret = base64.RawURLEncoding.EncodeToString(b[:])
		logger.Warn("no signing secret configured: using a random one; tokens will not survive a restart")
	}
	// A superseded key verifies until every token it signed has expired.
	ring, err := keyring.NewRing(st, secret, keyring.Options{
		RotateEvery: cfg.KeyRotation, PublishDelay: 2 * cfg.KeyRefresh, RetainFor: cfg.TokenTTL + time.Minute})
	if err != nil {
		return nil, err
	}
	if err := ring.Refresh(ctx); err != nil {
		return nil, err
	}
	s.ring = ring
	s.tokens = keyring.NewTokens(ring, keyring.TokenOptions{
		Issuer: cfg.Issuer, Audience: cfg.Audience, TTL: cfg.TokenTTL, Leeway: 30 * time.Second, Now: time.Now})
	s.keys = keyauth.New(st, keyauth.Options{
		TTL: cfg.APIKeyCacheTTL, Size: cfg.APIKeyCacheSize, Timeout: cfg.CheckTimeout, Now: h.keyClock})
	s.checks = extauthz.New(s.tokens, s.keys, &s.policy, extauthz.Options{
		PublicPaths: cfg.PublicPaths, AdminPaths: cfg.AdminPaths, DefaultMaxTokens: cfg.DefaultMaxTokens,
		StoreFailure: cfg.StoreFailure, Logger: logger, Registerer: s.reg})
	s.oauth = oauth.New(st, s.tokens, oauth.Options{
		Issuer: cfg.Issuer, Audience: cfg.Audience, TokenTTL: cfg.TokenTTL, RefreshTTL: cfg.RefreshTTL, Secret: secret})
	if err := s.bootstrapAdmin(ctx); err != nil {
		return nil, err
	}
	if err := s.listen(); err != nil {
		return nil, err
	}
	return s, nil
}

// maxCheckBytes bounds a CheckRequest: the largest body a gateway may send
// (policy.MaxMaxRequestBytes) and 1 MiB for the headers and the rest.
const maxCheckBytes = policy.MaxMaxRequestBytes + 1<<20

// listen builds the runtime, binding both listeners: ext_authz on gRPC,
// the HTTP API, and readiness from the store and the signing keys.
func (s *Service) listen() error {
	s.handler = s.routes()
	srv, err := serve.New(s.cfg.Config, serve.Options{
		GRPCAddr: s.cfg.GRPCAddr,
		HTTPAddr: s.cfg.HTTPAddr,
		Handler:  s.handler,
		Gatherer: s.reg,
		Probes:   []serve.Probe{{Name: "store", Check: s.pingStore}, {Name: "signing_keys", Check: s.signingKeysLoaded}},
		Degraded: s.xds.Degraded,
		// Stream workers avoid a goroutine (and its stack growth) per Check.
		// A Check carries up to the policy's largest max_request_bytes of
		// body beside the headers: above gRPC's default 4 MiB receive limit.
		GRPCOptions: []grpc.ServerOption{grpc.NumStreamWorkers(uint32(runtime.GOMAXPROCS(0))),
			grpc.MaxRecvMsgSize(maxCheckBytes)},
	}, s.logger)
	if err != nil {
		return err
	}
	authv3.RegisterAuthorizationServer(srv, s.checks)
	s.srv = srv
	return nil
}

// pingStore is the store's readiness probe, under the Check deadline.
func (s *Service) pingStore(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.CheckTimeout)
	defer cancel()
	return s.store.Ping(ctx)
}

// signingKeysLoaded is the readiness probe of the key set: without one no
// token can be issued or verified.
func (s *Service) signingKeysLoaded(context.Context) error {
	if s.ring.Set() == nil {
		return errors.New("no signing key set loaded")
	}
	return nil
}

// GRPCAddr is the bound ext_authz address.
func (s *Service) GRPCAddr() string { return s.srv.GRPCAddr() }

// HTTPAddr is the bound HTTP address.
func (s *Service) HTTPAddr() string { return s.srv.HTTPAddr() }

// Admin returns the bootstrap admin's credentials (see AdminCredentials).
func (s *Service) Admin() AdminCredentials { return s.admin }

// Close releases the listeners and the store of a Service that never ran.
func (s *Service) Close() {
	s.srv.Close()
	s.store.Close()
}

// Run serves gRPC and HTTP on the runtime, reloads the signing keys every
// KeyRefresh, follows policy changes (from the control plane with
// ConfigXDS, else the policy file) and purges expired token
// records every ten minutes, until ctx ends. The runtime probes the store
// and the key set for readiness, and at the end turns NOT_SERVING first and
// drains both servers within ShutdownGrace; then the store closes. It
// returns nil after a clean shutdown.
func (s *Service) Run(ctx context.Context) error {
	defer s.store.Close()
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return s.srv.Run(gctx) })
	g.Go(func() error { s.every(gctx, s.cfg.KeyRefresh, s.refreshKeys); return nil })
	g.Go(func() error { s.watchPolicy(gctx, policyPoll); return nil })
	g.Go(func() error { s.every(gctx, 10*time.Minute, s.purgeTokens); return nil })
	return g.Wait()
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
	if err := s.ring.Refresh(ctx); err != nil {
		s.logger.Warn("signing key refresh failed; the previous key set keeps serving", serve.KeyError, err.Error())
	}
}

// purgeTokens deletes OAuth2 token records that expired over an hour ago.
func (s *Service) purgeTokens(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if n, err := s.store.PurgeTokens(ctx, time.Now().Add(-time.Hour)); err != nil {
		s.logger.Warn("token purge failed", serve.KeyError, err.Error())
	} else if n > 0 {
		s.logger.Info("purged expired tokens", serve.KeyCount, n)
	}
}

// keyPasswordGenerated is the log key of whether the bootstrap admin's
// password was generated at this start (it is shown once, never logged).
const keyPasswordGenerated = "password_generated"

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
	u := store.User{ID: uuid.NewString(), Username: name, Email: s.cfg.AdminEmail, PasswordHash: hash,
		Roles: []string{store.RoleUser, store.RoleAdmin}, CreatedAt: time.Now().UTC().Truncate(time.Microsecond)}
	if err := s.store.CreateUser(ctx, u); errors.Is(err, store.ErrConflict) {
		// Another replica created it meanwhile, or its email is taken.
		s.admin.Password = ""
		s.logger.Warn("bootstrap admin not created: username or email already taken", serve.KeyUsername, name)
		return nil
	} else if err != nil {
		return fmt.Errorf("bootstrap admin: %w", err)
	}
	s.logger.Info("bootstrap admin created", serve.KeyUsername, name, keyPasswordGenerated, s.admin.Password != "")
	return nil
}
