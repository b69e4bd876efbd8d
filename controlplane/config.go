package controlplane

import (
	"errors"
	"flag"
	"fmt"
	"maps"
	"net"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/leakytokens/leaky/controlplane/model"
	"github.com/leakytokens/leaky/internal/serve"
)

// Config is the control plane's configuration; DefaultConfig holds the
// defaults, RegisterFlags the flags (each also read from LEAKY_<FLAG>).
type Config struct {
	serve.Config

	XDSAddr  string // the xDS gRPC listener (ADS, LDS, RDS, CDS, EDS, RTDS)
	HTTPAddr string // the admin API, /readyz, /livez, /metrics
	// PolicyPath is the policy file or directory; empty: the embedded
	// example, read-only. With ConsulAddr it seeds the KV key when absent.
	PolicyPath string
	// PolicyPoll is how often the policy file is read for changes.
	PolicyPoll time.Duration
	// ConsulAddr, when set, makes Consul the source: the policy from the
	// key ConsulPolicyKey and the endpoints from the catalog (every service
	// not pinned by Endpoints).
	ConsulAddr      string
	ConsulPolicyKey string
	// Listener is the gateway's listening address, host:port; port 0
	// means Server.SetListener will say (nothing is pushed until then).
	Listener string
	// Endpoints pins services to addresses: service name → host:port
	// list. Without Consul the defaults of DefaultEndpoints apply to every
	// service not named here; with Consul only these are static.
	Endpoints map[string][]string
	// JWKSURL is authz's published key set, which verifies the ADMIN
	// tokens of the admin API; Issuer and Audience are the iss and aud
	// those tokens must carry.
	JWKSURL  string
	Issuer   string
	Audience string
}

// DefaultConfig returns the defaults (DESIGN §2's ports).
func DefaultConfig() Config {
	return Config{
		Config:          serve.DefaultConfig(),
		XDSAddr:         "127.0.0.1:18000",
		HTTPAddr:        "127.0.0.1:8084",
		PolicyPoll:      200 * time.Millisecond,
		ConsulPolicyKey: "leaky/policy",
		Listener:        "0.0.0.0:8080",
		Endpoints:       map[string][]string{},
		JWKSURL:         "http://127.0.0.1:8081/.well-known/jwks.json",
		Issuer:          "leaky-tokens-auth",
		Audience:        "leaky-tokens",
	}
}

// DefaultEndpoints are where each service listens by default (DESIGN §2):
// the static endpoints of a control plane without Consul.
func DefaultEndpoints() map[string][]string {
	return map[string][]string{
		model.ServiceAuthzGRPC:          {"127.0.0.1:9091"},
		model.ServiceAuthzHTTP:          {"127.0.0.1:8081"},
		model.ServiceRatelimitGRPC:      {"127.0.0.1:9092"},
		model.ServiceRatelimitHTTP:      {"127.0.0.1:8082"},
		model.ServiceAnalyticsHTTP:      {"127.0.0.1:8083"},
		model.ProviderService("qwen"):   {"127.0.0.1:8091"},
		model.ProviderService("gemini"): {"127.0.0.1:8092"},
		model.ProviderService("openai"): {"127.0.0.1:8093"},
	}
}

// RegisterFlags adds a flag for every field to fs, with c's values as
// defaults (start from DefaultConfig).
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.XDSAddr, "xds-addr", c.XDSAddr, "xDS gRPC listen address (ADS and LDS/RDS/CDS/EDS/RTDS)")
	fs.StringVar(&c.HTTPAddr, "http-addr", c.HTTPAddr, "admin API, /readyz, /livez and /metrics listen address")
	fs.StringVar(&c.PolicyPath, "policy", c.PolicyPath, "policy file or directory (empty: the embedded example, read-only); with -consul-addr it seeds the KV key when absent")
	fs.DurationVar(&c.PolicyPoll, "policy-poll", c.PolicyPoll, "how often the policy file is read for changes")
	fs.StringVar(&c.ConsulAddr, "consul-addr", c.ConsulAddr, "Consul HTTP address (host:port): the policy from -consul-policy-key, endpoints from the catalog")
	fs.StringVar(&c.ConsulPolicyKey, "consul-policy-key", c.ConsulPolicyKey, "Consul KV key holding the policy")
	fs.StringVar(&c.Listener, "listener", c.Listener, "the gateway's listening address (host:port) in the generated listener")
	fs.Var((*endpointFlag)(&c.Endpoints), "endpoint", "SERVICE=HOST:PORT pins a service (e.g. leaky-provider-openai=127.0.0.1:8093); repeat it, or separate with commas, for more instances and services")
	fs.StringVar(&c.JWKSURL, "authz-jwks-url", c.JWKSURL, "authz's published key set, which verifies the admin API's ADMIN tokens")
	fs.StringVar(&c.Issuer, "issuer", c.Issuer, "the iss admin tokens must carry")
	fs.StringVar(&c.Audience, "audience", c.Audience, "the aud admin tokens must carry")
	c.Config.RegisterFlags(fs)
}

// serviceName is what a service may be called: a Consul service name and
// an Envoy cluster name.
var serviceName = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,127}$`)

// Validate reports every problem with c.
func (c Config) Validate() error {
	errs := []error{c.Config.Validate()}
	for _, a := range []struct{ flag, v string }{{"xds-addr", c.XDSAddr}, {"http-addr", c.HTTPAddr}} {
		if _, _, err := net.SplitHostPort(a.v); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", a.flag, err))
		}
	}
	if _, port, err := net.SplitHostPort(c.Listener); err != nil || port != "0" {
		// Port 0: set later (Server.SetListener); nothing is pushed until then.
		if _, err := model.ParseEndpoint(c.Listener); err != nil {
			errs = append(errs, fmt.Errorf("listener: %w", err))
		}
	}
	if c.PolicyPoll <= 0 {
		errs = append(errs, errors.New("policy-poll: must be positive"))
	}
	if c.ConsulAddr != "" && c.ConsulPolicyKey == "" {
		errs = append(errs, errors.New("consul-policy-key: must be set with -consul-addr"))
	}
	for _, name := range slices.Sorted(maps.Keys(c.Endpoints)) {
		if !serviceName.MatchString(name) {
			errs = append(errs, fmt.Errorf("endpoint %q: not a service name (lower-case letters, digits, '.', '_', '-')", name))
		}
		for _, e := range c.Endpoints[name] {
			if _, err := model.ParseEndpoint(e); err != nil {
				errs = append(errs, fmt.Errorf("endpoint %s: %w", name, err))
			}
		}
	}
	if c.JWKSURL == "" || !(strings.HasPrefix(c.JWKSURL, "http://") || strings.HasPrefix(c.JWKSURL, "https://")) {
		errs = append(errs, fmt.Errorf("authz-jwks-url %q: must be an http(s) URL", c.JWKSURL))
	}
	if c.Issuer == "" || c.Audience == "" {
		errs = append(errs, errors.New("issuer, audience: must be set"))
	}
	return errors.Join(errs...)
}

// staticEndpoints are the endpoints c pins: the defaults (without Consul)
// overridden service by service by -endpoint.
func (c Config) staticEndpoints() map[string][]model.Endpoint {
	src := map[string][]string{}
	if c.ConsulAddr == "" {
		src = DefaultEndpoints()
	}
	maps.Copy(src, c.Endpoints)
	out := make(map[string][]model.Endpoint, len(src))
	for name, addrs := range src {
		for _, a := range addrs {
			if e, err := model.ParseEndpoint(a); err == nil { // Validate reported the others
				out[name] = append(out[name], e)
			}
		}
	}
	return out
}

// endpointFlag is -endpoint SERVICE=HOST:PORT, repeatable and
// comma-separated; each value adds to the service's list.
type endpointFlag map[string][]string

func (f *endpointFlag) String() string {
	if f == nil || *f == nil {
		return ""
	}
	var parts []string
	for _, name := range slices.Sorted(maps.Keys(*f)) {
		for _, a := range (*f)[name] {
			parts = append(parts, name+"="+a)
		}
	}
	return strings.Join(parts, ",")
}

func (f *endpointFlag) Set(s string) error {
	if *f == nil {
		*f = map[string][]string{}
	}
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p == "" {
			continue
		}
		name, addr, ok := strings.Cut(p, "=")
		if !ok || name == "" || addr == "" {
			return fmt.Errorf("%q: want SERVICE=HOST:PORT", p)
		}
		(*f)[name] = append((*f)[name], addr)
	}
	return nil
}
