// Package controlplane is the xDS management server (`leaky controlplane`),
// built in Envoy Gateway's shape: sources → model → Validate → translate →
// snapshot. The sources are the policy (the -policy file or directory, or
// one Consul KV key) and the endpoints of the services (static flags, or
// the Consul catalog); controlplane/model holds what they say; a pure
// Translator turns a valid model into one snapshot that every node is
// served (Envoy, the gateway stand-in, the ratelimit service and authz,
// grpc-go xDS clients). A source that fails, or a model that is refused,
// leaves the last snapshot serving and says so in /readyz and the
// metrics. The admin API (/api/v1/admin, ADMIN tokens of authz) lists and
// edits tiers by writing to the policy source, and shows what was pushed
// and what each node ACKed or NACKed.
package controlplane

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"time"

	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"golang.org/x/sync/errgroup"

	"github.com/leakytokens/leaky/controlplane/model"
	"github.com/leakytokens/leaky/controlplane/translate"
	"github.com/leakytokens/leaky/internal/jwks"
	"github.com/leakytokens/leaky/internal/policy"
	"github.com/leakytokens/leaky/internal/serve"
)

// Deps are what cmd/leaky chooses for the Server.
type Deps struct {
	// Translate turns a valid model into the snapshot; nil:
	// controlplane/translate.Translate.
	Translate Translator
	// Catalog and KV are Consul (controlplane/consul), set together when
	// Config.ConsulAddr is; nil otherwise.
	Catalog Catalog
	KV      KV
	// JWKSClient fetches authz's key set; nil: a client with a 5 s
	// timeout.
	JWKSClient *http.Client
}

// Server is the control plane. New binds its listeners and pushes the
// first snapshot when the sources allow; Run serves until its context
// ends.
type Server struct {
	cfg      Config
	log      *slog.Logger
	m        *metrics
	pipeline *pipeline
	nodes    *nodes
	source   policySource
	catalog  Catalog
	pinned   map[string][]model.Endpoint
	srv      *serve.Server
	admin    *admin
	jwks     *http.Client // Deps.JWKSClient

	stopXDS context.CancelFunc // ends the xDS streams
}

// jwksLeeway is the clock skew allowed between authz and the control plane.
const jwksLeeway = 30 * time.Second

// New validates cfg, loads the policy file (a file that fails validation
// at start is an error, as in every service), builds the pipeline and
// binds the xDS and HTTP listeners. With Consul, the policy comes from the
// KV key once Run has read it (seeded from -policy when absent).
func New(cfg Config, logger *slog.Logger, deps Deps) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("controlplane config: %w", err)
	}
	if deps.Translate == nil {
		deps.Translate = translate.Translate
	}
	if (cfg.ConsulAddr != "") != (deps.KV != nil && deps.Catalog != nil) {
		return nil, errors.New("controlplane: Consul needs both -consul-addr and its catalog and KV clients")
	}
	initial, err := policy.Load(cfg.PolicyPath)
	if err != nil {
		return nil, err
	}
	if initial.Policy() == nil {
		return nil, fmt.Errorf("%s: no %s policy file", cfg.PolicyPath, policy.Domain)
	}
	listener, _ := model.ParseEndpoint(cfg.Listener) // Validate checked it
	s := &Server{cfg: cfg, log: logger, m: newMetrics(), catalog: deps.Catalog, pinned: cfg.staticEndpoints()}
	cache := newCache()
	s.nodes = newNodes(cache, s.m, time.Now)
	s.pipeline = newPipeline(deps.Translate, cache, listener, s.m, logger)
	if deps.KV != nil {
		_, seed := initial.PolicyFile()
		s.source = newKVSource(deps.KV, cfg.ConsulPolicyKey, seed, logger)
	} else {
		s.source = newFileSource(cfg.PolicyPath, cfg.PolicyPoll, initial)
	}
	verify := jwks.New(jwks.Options{URL: cfg.JWKSURL, Issuer: cfg.Issuer, Audience: cfg.Audience,
		Leeway: jwksLeeway, Client: deps.JWKSClient})
	adm := &admin{source: s.source, pipeline: s.pipeline, nodes: s.nodes, verify: verify, m: s.m, log: logger}
	s.admin, s.jwks = adm, deps.JWKSClient
	s.srv, err = serve.New(cfg.Config, serve.Options{
		GRPCAddr: cfg.XDSAddr, HTTPAddr: cfg.HTTPAddr, Handler: adm.handler(), Gatherer: s.m.reg,
		Probes:   []serve.Probe{{Name: "snapshot", Check: s.snapshotServed}},
		Degraded: func() []string { return s.pipeline.state().Problems },
		LogAttrs: []any{"policy", s.policyName()},
	}, logger)
	if err != nil {
		return nil, err
	}
	var xdsCtx context.Context
	xdsCtx, s.stopXDS = context.WithCancel(context.Background())
	registerXDS(s.srv, serverv3.NewServer(xdsCtx, cache, s.nodes))
	s.pipeline.setEndpoints(s.pinned)
	if deps.KV == nil {
		s.pipeline.setConfig(initial)
	}
	return s, nil
}

func (s *Server) policyName() string {
	switch {
	case s.cfg.ConsulAddr != "":
		return "consul " + s.cfg.ConsulAddr + " key " + s.cfg.ConsulPolicyKey
	case s.cfg.PolicyPath == "":
		return policy.ExampleSource
	}
	return s.cfg.PolicyPath
}

// Pin sets the static endpoints of services (name → host:port list), as
// -endpoint does, after New: what a process that runs its services beside
// the control plane (leaky dev) learns once they have bound their
// listeners. Call it before Run; a pinned service is not read from the
// catalog.
func (s *Server) Pin(services map[string][]string) error {
	eps := make(map[string][]model.Endpoint, len(services))
	for name, addrs := range services {
		if len(addrs) == 0 {
			return fmt.Errorf("controlplane: pin %s: no address", name)
		}
		for _, a := range addrs {
			e, err := model.ParseEndpoint(a)
			if err != nil {
				return fmt.Errorf("controlplane: pin %s: %w", name, err)
			}
			eps[name] = append(eps[name], e)
		}
	}
	maps.Copy(s.pinned, eps)
	s.pipeline.setEndpoints(eps)
	return nil
}

// SetListener sets the gateway's listening address in the generated
// listener, as -listener does, after New: for a process that binds the
// gateway after the control plane (leaky dev, whose services must know
// the xDS address first). A -listener with port 0 means "set later":
// nothing is pushed until then. Call it before Run.
func (s *Server) SetListener(addr string) error {
	e, err := model.ParseEndpoint(addr)
	if err != nil {
		return fmt.Errorf("controlplane: listener: %w", err)
	}
	s.pipeline.setListener(e)
	return nil
}

// SetJWKSURL sets the key set that verifies the admin API's tokens, as
// -authz-jwks-url does, after New (leaky dev learns authz's address after
// the control plane binds). Call it before Run.
func (s *Server) SetJWKSURL(url string) error {
	c := s.cfg
	c.JWKSURL = url
	if err := c.Validate(); err != nil {
		return err
	}
	s.cfg = c
	s.admin.verify = jwks.New(jwks.Options{URL: url, Issuer: c.Issuer, Audience: c.Audience, Leeway: jwksLeeway, Client: s.jwks})
	return nil
}

// XDSAddr is the bound xDS address.
func (s *Server) XDSAddr() string { return s.srv.GRPCAddr() }

// HTTPAddr is the bound admin/health address.
func (s *Server) HTTPAddr() string { return s.srv.HTTPAddr() }

// Version is the version of the snapshot served; "" before the first.
func (s *Server) Version() string { return s.pipeline.state().Version }

// Close releases the listeners of a Server that will not Run.
func (s *Server) Close() {
	s.stopXDS()
	s.srv.Close()
}

// Run watches the sources and serves until ctx ends; it returns after the
// listeners have stopped.
func (s *Server) Run(ctx context.Context) error {
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		s.source.watch(gctx, s.pipeline.setConfig, s.pipeline.policyFailed)
		return nil
	})
	if s.catalog != nil {
		g.Go(func() error { s.watchCatalog(gctx); return nil })
	}
	g.Go(func() error {
		<-gctx.Done()
		s.stopXDS() // the streams end, so the graceful stop does not wait for them
		return nil
	})
	g.Go(func() error { return s.srv.Run(gctx) })
	return g.Wait()
}

// snapshotServed is the readiness probe: ready once a snapshot is served.
// A later refused model keeps it ready (the last snapshot serves) and
// shows as degraded.
func (s *Server) snapshotServed(context.Context) error {
	if s.pipeline.state().Snap == nil {
		return errors.New("no snapshot pushed yet")
	}
	return nil
}
