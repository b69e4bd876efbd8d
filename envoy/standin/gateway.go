// Package standin is the gateway stand-in (`leaky gateway`): on machines
// without an Envoy binary it plays Envoy's part, as an ADS client of the
// control plane, executing the subset of Envoy's behaviour the generated
// configuration uses (i8-spec, i9-spec): path normalisation, early header
// removal and edge request ids, ext_authz, ratelimit, ext_proc (the
// metering exchange, see processRequest) and the router with its
// timeouts, retries, circuit breakers and outlier detection. Every resource is compiled before
// it is ACKed; a set field or an extension type the stand-in does not
// implement makes it NACK the update, naming the field, and keep its last
// good configuration, so that a configuration it accepts is one it really
// executes. It is a development and test tool: production runs Envoy.
package standin

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/leakytokens/leaky/envoy/standin/ads"
	"github.com/leakytokens/leaky/internal/serve"
)

// NodeCluster is the node cluster the gateway names itself with.
const NodeCluster = "leaky-gateway"

// defaultStreamIdle is Envoy's default stream_idle_timeout.
const defaultStreamIdle = 5 * time.Minute

// Config is the gateway's command line.
type Config struct {
	Listen    string // the listener's host:port; it wins over the address LDS gives
	XDSAddr   string // the control plane's ADS host:port
	AdminAddr string // the admin interface's host:port, loopback only; "" for none
	NodeID    string // the xDS node id
	// MinBackoff and MaxBackoff bound the wait before reconnecting to the
	// control plane (full jitter, doubling).
	MinBackoff, MaxBackoff time.Duration
	// ShutdownGrace bounds the drain of a replaced or stopping server.
	ShutdownGrace time.Duration
}

// DefaultConfig is the gateway on the DESIGN §2 ports.
func DefaultConfig() Config {
	return Config{
		Listen: "127.0.0.1:8080", XDSAddr: "127.0.0.1:18000", AdminAddr: "127.0.0.1:9901",
		NodeID: "leaky-gateway", MinBackoff: 250 * time.Millisecond, MaxBackoff: 5 * time.Second,
		ShutdownGrace: 10 * time.Second,
	}
}

// RegisterFlags binds c's fields to flags.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.Listen, "listen", c.Listen, "the gateway's listening `host:port` (wins over the listener address LDS gives)")
	fs.StringVar(&c.XDSAddr, "xds-addr", c.XDSAddr, "the control plane's ADS `host:port`")
	fs.StringVar(&c.AdminAddr, "admin-addr", c.AdminAddr, "the admin interface's `host:port` (/ready, /config_dump, /metrics); loopback only; empty for none")
	fs.StringVar(&c.NodeID, "node-id", c.NodeID, "the xDS node `id`")
	fs.DurationVar(&c.MinBackoff, "xds-min-backoff", c.MinBackoff, "the first wait before reconnecting to the control plane")
	fs.DurationVar(&c.MaxBackoff, "xds-max-backoff", c.MaxBackoff, "the longest wait before reconnecting to the control plane")
	fs.DurationVar(&c.ShutdownGrace, "shutdown-grace", c.ShutdownGrace, "how long requests in flight may finish at a stop")
}

// Validate reports every problem with c.
func (c Config) Validate() error {
	var errs []error
	for name, addr := range map[string]string{"listen": c.Listen, "xds-addr": c.XDSAddr} {
		if _, _, err := net.SplitHostPort(addr); err != nil {
			errs = append(errs, fmt.Errorf("-%s %q: want host:port", name, addr))
		}
	}
	if c.AdminAddr != "" {
		host, _, err := net.SplitHostPort(c.AdminAddr)
		ip := net.ParseIP(host)
		if err != nil || host != "localhost" && (ip == nil || !ip.IsLoopback()) {
			errs = append(errs, fmt.Errorf("-admin-addr %q: the admin interface listens on a loopback address only", c.AdminAddr))
		}
	}
	if c.NodeID == "" {
		errs = append(errs, errors.New("-node-id: required"))
	}
	if c.MinBackoff <= 0 || c.MaxBackoff < c.MinBackoff {
		errs = append(errs, errors.New("-xds-min-backoff must be above 0 and -xds-max-backoff not below it"))
	}
	if c.ShutdownGrace <= 0 {
		errs = append(errs, errors.New("-shutdown-grace must be above 0"))
	}
	return errors.Join(errs...)
}

// Gateway is the stand-in. New binds its sockets; Run serves, once, and
// releases them when it returns; a Gateway whose Run is never called
// releases them with Close.
type Gateway struct {
	cfg      Config
	log      *slog.Logger
	metrics  *metrics
	front    *frontend
	admin    *http.Server
	adminLis net.Listener
	xdsConn  *grpc.ClientConn
	ads      *ads.Client
	throttle *serve.Throttle
	// streamIdle is Envoy's stream_idle_timeout: how long a read of a
	// request body or a write of a response may wait (defaultStreamIdle;
	// tests shorten it before Run).
	streamIdle time.Duration

	current atomic.Pointer[pipeline] // nil until the first configuration

	applyMu   sync.Mutex
	upstreams map[string]*upstream

	lifeMu sync.Mutex
	ran    bool // Run was called: it releases the sockets
	closed bool // Close released them
}

// errClosed is Run after Close.
var errClosed = errors.New("gateway: closed")

// New validates cfg and binds the listener and the admin address, so both
// are known before Run.
func New(cfg Config, logger *slog.Logger) (*Gateway, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	g := &Gateway{cfg: cfg, log: logger, metrics: newMetrics(), throttle: serve.NewThrottle(10 * time.Second),
		streamIdle: defaultStreamIdle, upstreams: map[string]*upstream{}}
	lis, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("listen: %w", err)
	}
	g.front = &frontend{lis: lis, handler: g, log: logger, grace: cfg.ShutdownGrace}
	if cfg.AdminAddr != "" {
		if g.adminLis, err = net.Listen("tcp", cfg.AdminAddr); err != nil {
			lis.Close()
			return nil, fmt.Errorf("admin listen: %w", err)
		}
		g.admin = &http.Server{Handler: g.adminHandler(), ReadHeaderTimeout: 10 * time.Second}
	}
	g.xdsConn, err = grpc.NewClient(cfg.XDSAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		_ = g.closeSockets()
		return nil, fmt.Errorf("xds client: %w", err)
	}
	state := &xdsState{compiler: &compiler{allow: newAllowList()}, apply: g.apply, metrics: g.metrics, log: logger, types: map[string]typeSet{}}
	node := &corev3.Node{Id: cfg.NodeID, Cluster: NodeCluster, UserAgentName: "leaky-gateway"}
	g.ads = ads.New(g.xdsConn, ads.Config{Node: node, MinBackoff: cfg.MinBackoff, MaxBackoff: cfg.MaxBackoff}, state, logger)
	return g, nil
}

func (g *Gateway) closeSockets() error {
	err := g.front.lis.Close()
	if g.adminLis != nil {
		err = errors.Join(err, g.adminLis.Close())
	}
	return err
}

// Close releases what New bound (the listener, the admin socket and the
// xDS client connection) when Run is never called; once Run was called it
// does nothing, as Run releases them when it returns. Close may be called
// more than once; Run after Close fails.
func (g *Gateway) Close() error {
	g.lifeMu.Lock()
	defer g.lifeMu.Unlock()
	if g.ran || g.closed {
		return nil
	}
	g.closed = true
	return errors.Join(g.closeSockets(), g.xdsConn.Close())
}

// Addr is the listener's bound address.
func (g *Gateway) Addr() string { return g.front.lis.Addr().String() }

// AdminAddr is the admin interface's bound address ("" without one).
func (g *Gateway) AdminAddr() string {
	if g.adminLis == nil {
		return ""
	}
	return g.adminLis.Addr().String()
}

// Run serves until ctx ends, then drains within ShutdownGrace and releases
// the sockets. It fails at once after Close.
func (g *Gateway) Run(ctx context.Context) error {
	g.lifeMu.Lock()
	closed := g.closed
	g.ran = true
	g.lifeMu.Unlock()
	if closed {
		return errClosed
	}
	g.log.Info("gateway serving", "listen", g.Addr(), "admin", g.AdminAddr(), "xds_addr", g.cfg.XDSAddr, "node_id", g.cfg.NodeID)
	g.front.use(bootSettings())
	eg, ctx := errgroup.WithContext(ctx)
	eg.Go(func() error { return g.front.serve(ctx) })
	eg.Go(func() error { return g.ads.Run(ctx) })
	if g.admin != nil {
		eg.Go(func() error {
			if err := g.admin.Serve(g.adminLis); err != nil && !errors.Is(err, http.ErrServerClosed) {
				return fmt.Errorf("admin serve: %w", err)
			}
			return nil
		})
		eg.Go(func() error {
			<-ctx.Done()
			sctx, cancel := context.WithTimeout(context.Background(), g.cfg.ShutdownGrace)
			defer cancel()
			return g.admin.Shutdown(sctx)
		})
	}
	err := eg.Wait()
	g.xdsConn.Close()
	g.applyMu.Lock()
	for _, u := range g.upstreams {
		u.close()
	}
	g.applyMu.Unlock()
	return err
}

// ServeHTTP is the listener: the current configuration's pipeline, or,
// before there is one, 503 with the house's JSON error (there is no
// local_reply_config yet to format it).
func (g *Gateway) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p := g.current.Load()
	if p == nil {
		// The shape the generated local_reply_config gives every other
		// local reply: error, message, status.
		serve.WriteJSON(w, http.StatusServiceUnavailable, struct {
			Error   string `json:"error"`
			Message string `json:"message"`
			Status  int    `json:"status"`
		}{"unavailable", "the gateway has no configuration from the control plane yet", http.StatusServiceUnavailable})
		return
	}
	p.serve(w, r)
}

// apply swaps a complete configuration in: the clusters' runtimes first
// (kept across updates), then the pipeline, then the server settings.
func (g *Gateway) apply(cfg *config) {
	g.applyMu.Lock()
	defer g.applyMu.Unlock()
	if cur := g.current.Load(); cur != nil && cfg.sameAs(cur.cfg) {
		return
	}
	now := time.Now()
	ups := make(map[string]*upstream, len(cfg.clusters))
	for name, cc := range cfg.clusters {
		u := g.upstreams[name]
		if u == nil {
			u = newUpstream(name, now)
		}
		u.update(cc, cfg.endpoints[name])
		ups[name] = u
	}
	for name, u := range g.upstreams {
		if ups[name] == nil {
			u.close()
		}
	}
	g.upstreams = ups
	g.connectGRPC(cfg)
	g.current.Store(&pipeline{cfg: cfg, upstreams: ups, g: g})
	g.front.use(cfg.listener.server)
	g.metrics.applied.Inc()
	g.metrics.ready.Set(1)
	g.warnUnusedPerFilter(cfg)
	g.log.Info("configuration applied", "versions", cfg.versions, "listener", cfg.listener.name,
		"lds_address", cfg.listener.address, "listen", g.Addr(), "clusters", len(cfg.clusters))
}

// connectGRPC starts connecting to the ext_authz, ratelimit and ext_proc clusters
// before the first request needs them (the rate-limit call has 20 ms). The
// caller holds g.applyMu.
func (g *Gateway) connectGRPC(cfg *config) {
	var names []string
	if a := cfg.listener.authz; a != nil {
		names = append(names, a.cluster)
	}
	if l := cfg.listener.limit; l != nil {
		names = append(names, l.cluster)
	}
	if e := cfg.listener.extProc; e != nil {
		names = append(names, e.cluster)
	}
	for _, name := range names {
		conn, err := g.upstreams[name].grpcConn()
		if err != nil {
			g.log.Warn("grpc client for a cluster", "cluster", name, "error", err)
			continue
		}
		conn.Connect()
	}
}

// warnUnusedPerFilter logs per-route filter configurations whose key names
// no filter of the listener (Envoy ignores them the same way).
func (g *Gateway) warnUnusedPerFilter(cfg *config) {
	for _, vh := range cfg.routes.vhosts {
		for _, r := range vh.routes {
			for name := range r.authzOff {
				if cfg.listener.authz == nil || cfg.listener.authz.name != name {
					g.log.Warn("per-route ext_authz configuration names no ext_authz filter", "route", r.label(), "filter", name)
				}
			}
			for name := range r.extProcOff {
				if cfg.listener.extProc == nil || cfg.listener.extProc.name != name {
					g.log.Warn("per-route ext_proc configuration names no ext_proc filter", "route", r.label(), "filter", name)
				}
			}
			for name := range r.limits {
				if cfg.listener.limit == nil || cfg.listener.limit.name != name {
					g.log.Warn("per-route ratelimit configuration names no ratelimit filter", "route", r.label(), "filter", name)
				}
			}
		}
	}
}

// throttledWarn logs a per-request problem at most once per 10 s.
func (g *Gateway) throttledWarn(msg string, args ...any) {
	if ok, skipped := g.throttle.Allow(time.Now()); ok {
		g.log.Warn(msg, append(args, serve.KeySkipped, skipped)...)
	}
}
