package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"

	"golang.org/x/sync/errgroup"

	"github.com/leakytokens/leaky/authz"
	"github.com/leakytokens/leaky/controlplane"
	"github.com/leakytokens/leaky/controlplane/model"
	"github.com/leakytokens/leaky/envoy/standin"
	"github.com/leakytokens/leaky/internal/kafkadev"
	"github.com/leakytokens/leaky/internal/policy"
	"github.com/leakytokens/leaky/internal/serve"
	providersstub "github.com/leakytokens/leaky/providers-stub"
	"github.com/leakytokens/leaky/ratelimit"
)

// devFlags is what `leaky dev` is told: every service's configuration and
// where the pieces of the request path listen.
type devFlags struct {
	rl       ratelimit.Config
	az       authz.Config
	cp       controlplane.Config
	stub     providersstub.Config
	gw       standin.Config
	gateway  string // auto, standin, envoy or none
	stateDir string // where the example policy is copied when -config is empty
	// consulAddr, when set, is the Consul agent (host:port) the control
	// plane reads the policy key and the catalog from, and every piece
	// registers with.
	consulAddr string
	// kafkaAddr is where the embedded Kafka-protocol broker listens when
	// no brokers are given (-kafka-brokers, KAFKA_BROKERS).
	kafkaAddr string
}

// gateway kinds of -gateway.
const (
	gatewayAuto    = "auto"
	gatewayStandin = "standin"
	gatewayEnvoy   = "envoy"
	gatewayNone    = "none"
)

func (f *devFlags) register(e env) (*flag.FlagSet, *serve.Config) {
	f.rl, f.az, f.cp = ratelimit.DefaultConfig(), authz.DefaultConfig(), controlplane.DefaultConfig()
	f.stub, f.gw = providersstub.DefaultConfig(), standin.DefaultConfig()
	fs := newFlagSet(e, "dev", "dev [flags]")
	fs.StringVar(&f.rl.ConfigPath, "config", "", "policy file, or a directory of it and envoyproxy/ratelimit domain files; empty = a copy of the embedded example policy in -state-dir (the admin API writes tier changes there)")
	fs.StringVar(&f.rl.GRPCAddr, "ratelimit-grpc-addr", f.rl.GRPCAddr, "ratelimit gRPC listen address")
	fs.StringVar(&f.rl.HTTPAddr, "ratelimit-http-addr", f.rl.HTTPAddr, "ratelimit HTTP listen address")
	fs.StringVar(&f.rl.Store, "ratelimit-store", f.rl.Store, "ratelimit store: memory or redis")
	fs.StringVar(&f.rl.RedisURL, "redis-url", f.rl.RedisURL, "Redis URL when -ratelimit-store redis")
	fs.StringVar(&f.az.GRPCAddr, "authz-grpc-addr", f.az.GRPCAddr, "authz gRPC listen address")
	fs.StringVar(&f.az.HTTPAddr, "authz-http-addr", f.az.HTTPAddr, "authz HTTP listen address")
	fs.StringVar(&f.az.DatabaseURL, "database-url", "", "PostgreSQL URL of authz's store and the token ledger (schema -ledger-schema); empty = the memory stores")
	fs.StringVar(&f.rl.LedgerSchema, "ledger-schema", f.rl.LedgerSchema, "PostgreSQL schema of the token ledger, with -database-url")
	fs.StringVar(&f.rl.KafkaBrokers, "kafka-brokers", "", "Kafka bootstrap servers for the usage events; empty: KAFKA_BROKERS, or the embedded broker on -kafka-addr")
	fs.StringVar(&f.kafkaAddr, "kafka-addr", "127.0.0.1:19092", "listen address of the embedded Kafka-protocol broker (kfake), when no brokers are given")
	fs.StringVar(&f.az.SigningSecret, "signing-secret", "", "seals authz signing keys at rest (required with -database-url)")
	fs.StringVar(&f.az.AdminUsername, "admin-username", f.az.AdminUsername, "bootstrap admin's username")
	fs.StringVar(&f.az.AdminPassword, "admin-password", "", "bootstrap admin's password; empty = generated and printed once")
	fs.StringVar(&f.cp.XDSAddr, "xds-addr", f.cp.XDSAddr, "control plane xDS listen address (port 0: a free one)")
	fs.StringVar(&f.cp.HTTPAddr, "controlplane-http-addr", f.cp.HTTPAddr, "control plane admin API listen address")
	fs.StringVar(&f.stub.OpenAIAddr, "openai-addr", f.stub.OpenAIAddr, "the OpenAI stub's listen address")
	fs.StringVar(&f.stub.GeminiAddr, "gemini-addr", f.stub.GeminiAddr, "the Gemini stub's listen address")
	fs.StringVar(&f.stub.QwenAddr, "qwen-addr", f.stub.QwenAddr, "the Qwen stub's listen address")
	fs.StringVar(&f.gw.Listen, "gateway-addr", f.gw.Listen, "the gateway's listen address (Envoy's :8080)")
	fs.StringVar(&f.gw.AdminAddr, "gateway-admin-addr", f.gw.AdminAddr, "the gateway's admin address (loopback only)")
	fs.StringVar(&f.gateway, "gateway", gatewayAuto, "the gateway: auto (envoy when on PATH, else the stand-in), standin, envoy or none")
	fs.StringVar(&f.stateDir, "state-dir", "", "directory for the copy of the example policy and the generated Envoy bootstrap; empty = a new temporary directory, removed at exit")
	fs.StringVar(&f.consulAddr, "consul-addr", "", "Consul agent HTTP address (host:port): the control plane takes the policy from -consul-policy-key (seeded from -config or the example's copy when absent) and every endpoint from the catalog, where each piece registers itself; empty: CONSUL_HTTP_ADDR, or no Consul")
	fs.StringVar(&f.cp.ConsulPolicyKey, "consul-policy-key", f.cp.ConsulPolicyKey, "Consul KV key holding the policy, with -consul-addr")
	bounds := serve.DefaultConfig() // the runtime's bounds, shared by the services
	bounds.RegisterFlags(fs)
	return fs, &bounds
}

// runDev runs the whole request path in one process on embedded defaults:
// the provider stubs, authz and ratelimit (memory stores; their policy from
// the control plane over xDS), the control plane (on a policy file), and
// the gateway: Envoy when it is on PATH, the stand-in otherwise.
func runDev(ctx context.Context, e env, args []string) error {
	f, err := parseDevFlags(e, args)
	if err != nil {
		return err
	}
	tuneGC(e)
	d := &dev{e: e}
	defer d.close()
	if err := d.start(ctx, f); err != nil {
		return fmt.Errorf("dev: %w", err)
	}
	printWalkthrough(e.stdout, d.walkthrough())
	return d.run(ctx)
}

// parseDevFlags reads `leaky dev`'s flags (the environment, then args)
// and checks -gateway.
func parseDevFlags(e env, args []string) (*devFlags, error) {
	var f devFlags
	fs, bounds := f.register(e)
	if err := parseFlags(e, fs, args); err != nil {
		return nil, err
	}
	f.rl.Config, f.az.Config, f.cp.Config = *bounds, *bounds, *bounds
	f.rl.DatabaseURL = f.az.DatabaseURL
	if f.rl.KafkaBrokers == "" {
		f.rl.KafkaBrokers = e.getenv("KAFKA_BROKERS")
	}
	if f.consulAddr == "" && e.getenv("CONSUL_HTTP_ADDR") != "" {
		// Consul's own variable, likely exported for other work: say so,
		// since dev registers its pieces and writes the policy key there.
		e.logger.Warn("CONSUL_HTTP_ADDR is set: leaky dev runs on that Consul agent (its catalog and the policy key); unset it, or pass -consul-addr, to choose",
			"consul_addr", e.getenv("CONSUL_HTTP_ADDR"))
	}
	f.consulAddr = consulAddrOf(e, f.consulAddr)
	switch f.gateway {
	case gatewayAuto, gatewayStandin, gatewayEnvoy, gatewayNone:
	default:
		return nil, fmt.Errorf("dev: -gateway %q: want auto, standin, envoy or none: %w", f.gateway, errUsage)
	}
	return &f, nil
}

// dev is the running pieces of `leaky dev`.
type dev struct {
	e       env
	closers []func() // undo what start did, last first
	runners []runner

	policyPath, policyNote string
	xds                    string
	rl                     *ratelimit.Service
	az                     *authz.Service
	cp                     *controlplane.Server
	stub                   *providersstub.Server
	gateway                string // standin, envoy or none
	gatewayAddr, gwAdmin   string
	rlStore                string
	kafka                  string // the brokers the usage events go to
	kafkaEmbedded          bool   // kafka is the embedded broker
	bootstrap              string // the Envoy bootstrap file written for envoy
	consulAddr, policyKey  string // the Consul agent and the policy's key; "" without Consul
}

func (d *dev) close() {
	for i := len(d.closers) - 1; i >= 0; i-- {
		d.closers[i]()
	}
}

// runner is one piece of dev, by name: Run serves until its context ends.
type runner struct {
	name string
	run  func(context.Context) error
}

// run runs every piece until ctx ends or one fails.
func (d *dev) run(ctx context.Context) error {
	g, gctx := errgroup.WithContext(ctx)
	for _, r := range d.runners {
		g.Go(func() error {
			if err := r.run(gctx); err != nil {
				return fmt.Errorf("%s: %w", r.name, err)
			}
			return nil
		})
	}
	return g.Wait()
}

// start binds every piece, in the order their addresses are needed: the
// control plane first (ratelimit, authz and the gateway subscribe to its
// xDS address), then the stubs, the services and the gateway, whose bound
// addresses the control plane is told before it runs.
func (d *dev) start(ctx context.Context, f *devFlags) error {
	if err := d.statePolicy(f); err != nil {
		return err
	}
	if f.consulAddr != "" {
		d.consulAddr, d.policyKey = f.consulAddr, f.cp.ConsulPolicyKey
	}
	if err := d.bindControlplane(f); err != nil {
		return err
	}
	f.rl.ConfigPath, f.rl.ConfigXDS = d.policyPath, d.xds
	f.az.PolicyPath, f.az.ConfigXDS = d.policyPath, d.xds
	d.rlStore = f.rl.Store
	log := d.e.logger
	var err error
	if d.stub, err = providersstub.New(f.stub, log.With(serve.KeyService, "providers-stub")); err != nil {
		return fmt.Errorf("providers-stub: %w", err)
	}
	d.closers, d.runners = append(d.closers, d.stub.Close), append(d.runners, runner{"providers-stub", d.stub.Run})
	if d.az, err = newAuthz(ctx, f.az, log.With(serve.KeyService, "authz")); err != nil {
		return fmt.Errorf("authz: %w", err)
	}
	d.closers, d.runners = append(d.closers, d.az.Close), append(d.runners, runner{"authz", d.az.Run})
	if err := d.startKafka(ctx, f); err != nil {
		return err
	}
	d.tokenAPI(f)
	var rec *record
	if d.rl, rec, err = startRatelimit(ctx, f.rl, log.With(serve.KeyService, "ratelimit")); err != nil {
		return fmt.Errorf("ratelimit: %w", err)
	}
	d.closers = append(d.closers, d.rl.Close, rec.close)
	d.runners = append(d.runners, runner{"ratelimit", func(ctx context.Context) error { return rec.run(ctx, d.rl) }})
	if err := d.startGateway(f); err != nil {
		return err
	}
	if err := d.wireControlplane(); err != nil {
		return err
	}
	return d.registerPieces(ctx)
}

// tokenAPI points ratelimit's token API at the pieces already bound:
// authz's key set (and its issuer and audience), the provider stubs, and
// the gateway, on loopback, as the proxy whose x-leaky-* identity headers
// it believes (any local process could send them too: dev only).
func (d *dev) tokenAPI(f *devFlags) {
	t := &f.rl.Tokens
	t.JWKSURL = "http://" + d.az.HTTPAddr() + "/.well-known/jwks.json"
	t.Issuer, t.Audience = f.az.Issuer, f.az.Audience
	t.TrustedProxies = "127.0.0.1/32,::1/128"
	t.ProviderURLs = map[string]string{}
	for name, addr := range d.stub.Addrs() {
		t.ProviderURLs[name] = "http://" + addr
	}
}

// startKafka starts the embedded Kafka-protocol broker on f.kafkaAddr
// unless brokers were given, and points ratelimit's relay at it. The broker
// outlives ctx's end until close, so the relay's last publish and the
// producer's flush still reach it.
func (d *dev) startKafka(ctx context.Context, f *devFlags) error {
	if f.rl.KafkaBrokers != "" {
		d.kafka = f.rl.KafkaBrokers
		return nil
	}
	b, err := kafkadev.Start(context.WithoutCancel(ctx), f.kafkaAddr, f.rl.KafkaTopic)
	if err != nil {
		return fmt.Errorf("kafka broker: %w", err)
	}
	d.closers = append(d.closers, b.Close)
	d.kafka, d.kafkaEmbedded, f.rl.KafkaBrokers = b.Addr(), true, b.Addr()
	return nil
}

// statePolicy sets the policy path: -config, or a copy of the embedded
// example in the state directory, which the admin API can rewrite.
func (d *dev) statePolicy(f *devFlags) error {
	dir := f.stateDir
	if dir == "" {
		tmp, err := os.MkdirTemp("", "leaky-dev-")
		if err != nil {
			return err
		}
		dir = tmp
		d.closers = append(d.closers, func() { os.RemoveAll(tmp) })
	}
	if f.rl.ConfigPath != "" {
		d.policyPath, d.policyNote = f.rl.ConfigPath, ""
		d.bootstrap = filepath.Join(dir, "envoy.yaml")
		return nil
	}
	d.policyPath = filepath.Join(dir, "policy.yaml")
	d.policyNote = " (a copy of the embedded example, internal/policy/example.yaml; tier changes are written here)"
	d.bootstrap = filepath.Join(dir, "envoy.yaml")
	return os.WriteFile(d.policyPath, policy.Example(), 0o644)
}

// startGateway binds the stand-in (or prepares Envoy's bootstrap), so
// that the control plane can be told the listener's address.
func (d *dev) startGateway(f *devFlags) error {
	d.gateway = f.gateway
	if d.gateway == gatewayAuto {
		d.gateway = gatewayStandin
		if _, err := exec.LookPath("envoy"); err == nil {
			d.gateway = gatewayEnvoy
		}
	}
	d.gatewayAddr, d.gwAdmin = f.gw.Listen, f.gw.AdminAddr
	if d.gateway != gatewayStandin {
		return nil
	}
	f.gw.XDSAddr = d.xds
	gw, err := standin.New(f.gw, d.e.logger.With(serve.KeyService, "gateway"))
	if err != nil {
		return fmt.Errorf("gateway: %w", err)
	}
	d.gatewayAddr, d.gwAdmin = gw.Addr(), gw.AdminAddr()
	d.closers = append(d.closers, func() { gw.Close() }) // nothing once Run has been called
	d.runners = append(d.runners, runner{"gateway", gw.Run})
	return nil
}

// bindControlplane binds the control plane on the policy file. Where the
// gateway listens and where authz publishes its keys are not known yet: a
// listener with port 0 holds every push until wireControlplane sets them.
func (d *dev) bindControlplane(f *devFlags) error {
	cp, err := d.controlplaneOn(f)
	if err != nil {
		return err
	}
	d.cp, d.xds = cp, cp.XDSAddr()
	d.closers = append(d.closers, cp.Close)
	return nil
}

// controlplaneOn is a control plane on the policy file (with Consul: on
// the policy key, seeded from the file, and the catalog) and f.cp's
// addresses, its listener to be set.
func (d *dev) controlplaneOn(f *devFlags) (*controlplane.Server, error) {
	host, _, err := net.SplitHostPort(f.gw.Listen)
	if err != nil {
		return nil, fmt.Errorf("gateway-addr: %w", err)
	}
	f.cp.PolicyPath, f.cp.Listener = d.policyPath, net.JoinHostPort(host, "0")
	f.cp.Issuer, f.cp.Audience = f.az.Issuer, f.az.Audience
	f.cp.ConsulAddr = d.consulAddr
	deps, err := controlplaneDeps(d.consulAddr)
	if err != nil {
		return nil, fmt.Errorf("controlplane: %w", err)
	}
	cp, err := controlplane.New(f.cp, d.e.logger.With(serve.KeyService, "controlplane"), deps)
	if err != nil {
		return nil, fmt.Errorf("controlplane: %w", err)
	}
	return cp, nil
}

// wireControlplane tells the control plane where everything listens and
// adds it, and Envoy when it is the gateway, to what dev runs.
func (d *dev) wireControlplane() error {
	if err := d.wire(d.cp); err != nil {
		return err
	}
	d.runners = append(d.runners, runner{"controlplane", d.cp.Run})
	if d.gateway == gatewayEnvoy {
		return d.prepareEnvoy()
	}
	return nil
}

// newControlplane binds a control plane that replaces one that stopped:
// the same xDS address every piece subscribes to (the clients reconnect),
// f.cp.HTTPAddr for its admin API, wired as the first was.
func (d *dev) newControlplane(f *devFlags) (*controlplane.Server, error) {
	f.cp.XDSAddr = d.xds
	cp, err := d.controlplaneOn(f)
	if err != nil {
		return nil, err
	}
	if err := d.wire(cp); err != nil {
		cp.Close()
		return nil, err
	}
	return cp, nil
}

// wire tells cp where the gateway listens, where authz publishes its keys
// and, without Consul, where every service listens (with Consul the
// catalog says, see registerPieces).
func (d *dev) wire(cp *controlplane.Server) error {
	if err := cp.SetListener(d.gatewayAddr); err != nil {
		return err
	}
	if err := cp.SetJWKSURL("http://" + d.az.HTTPAddr() + "/.well-known/jwks.json"); err != nil {
		return err
	}
	if d.consulAddr != "" {
		return nil
	}
	pins := map[string][]string{
		model.ServiceAuthzGRPC: {d.az.GRPCAddr()}, model.ServiceAuthzHTTP: {d.az.HTTPAddr()},
		model.ServiceRatelimitGRPC: {d.rl.GRPCAddr()}, model.ServiceRatelimitHTTP: {d.rl.HTTPAddr()},
		model.ServiceControlplaneHTTP: {cp.HTTPAddr()},
	}
	for name, addr := range d.stub.Addrs() {
		pins[model.ProviderService(name)] = []string{addr}
	}
	return cp.Pin(pins)
}
