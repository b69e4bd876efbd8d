// Package model is the control plane's view of the world between its
// sources and the translator (Envoy Gateway's shape: source → model →
// pure translate → snapshot). The sources (the policy file or Consul KV,
// the static endpoint flags or the Consul catalog) fill a Model; Validate
// says whether it is complete enough to push; controlplane/translate turns
// a valid Model into xDS resources and nothing else.
package model

import (
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"

	"github.com/leakytokens/leaky/internal/policy"
)

// The services the gateway routes to, by the name they have as an Envoy
// cluster and in the Consul catalog. Providers are named by
// ProviderService.
const (
	ServiceAuthzGRPC        = "leaky-authz-grpc"        // ext_authz Check
	ServiceAuthzHTTP        = "leaky-authz-http"        // /api/v1/auth, /oauth2, /.well-known
	ServiceRatelimitGRPC    = "leaky-ratelimit-grpc"    // ShouldRateLimit
	ServiceRatelimitHTTP    = "leaky-ratelimit-http"    // /api/v1/tokens
	ServiceAnalyticsHTTP    = "leaky-analytics-http"    // /api/v1/analytics
	ServiceControlplaneHTTP = "leaky-controlplane-http" // /api/v1/admin
)

// The names of the xDS resources the translator generates (one snapshot for
// every node; each asks for the types it needs). Consumers refer to these,
// never to literals.
const (
	ListenerName = "leaky-gateway" // the gateway's listener (Envoy's :8080)
	RouteName    = "leaky-routes"  // its route configuration
	VirtualHost  = "leaky"         // the one virtual host
	// RuntimeName is the Runtime (RTDS) resource that carries the policy
	// and the envoyproxy/ratelimit domain files to the ratelimit service
	// and authz: its layer is {RuntimeFilesField: {file name: file text}}.
	RuntimeName       = "leaky-tokens"
	RuntimeFilesField = "files"
)

// ProviderService is the cluster and catalog name of provider p's upstream
// (p as the policy names it: openai → leaky-provider-openai).
func ProviderService(p string) string { return "leaky-provider-" + p }

// Required lists the services a model must have endpoints for before it
// is pushed: the ones on every request's path (authz, ratelimit) and every
// provider the policy names. The others (analytics, the token API, the
// admin API) are routed when they have endpoints and answered 503 by the
// gateway while they have none.
func Required(p *policy.Policy) []string {
	out := []string{ServiceAuthzGRPC, ServiceAuthzHTTP, ServiceRatelimitGRPC}
	for name := range p.Providers {
		out = append(out, ProviderService(name))
	}
	slices.Sort(out)
	return out
}

// Endpoint is one healthy instance of a service.
type Endpoint struct {
	Host string // an IP address or a host name
	Port uint32
}

// String is host:port.
func (e Endpoint) String() string { return net.JoinHostPort(e.Host, strconv.Itoa(int(e.Port))) }

// ParseEndpoint reads host:port.
func ParseEndpoint(s string) (Endpoint, error) {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return Endpoint{}, err
	}
	n, err := strconv.ParseUint(port, 10, 16)
	if err != nil || n == 0 || host == "" {
		return Endpoint{}, fmt.Errorf("%q: want host:port with a port 1-65535", s)
	}
	return Endpoint{Host: host, Port: uint32(n)}, nil
}

// Model is one complete input of the translator.
type Model struct {
	// Config is the policy (domain leaky-tokens, with its gateway section)
	// and the envoyproxy/ratelimit domain files beside it, loaded and
	// validated by package policy.
	Config *policy.Snapshot
	// Endpoints are the healthy instances of each service, by service name.
	// Each list is sorted (Normalize) so equal models translate equally.
	Endpoints map[string][]Endpoint
	// Listener is the gateway's listening address (Envoy's :8080).
	Listener Endpoint
}

// Normalize sorts and de-duplicates every endpoint list and drops empty
// ones, so that two models with the same content are equal.
func (m *Model) Normalize() {
	for k, eps := range m.Endpoints {
		slices.SortFunc(eps, func(a, b Endpoint) int {
			if c := cmpString(a.Host, b.Host); c != 0 {
				return c
			}
			return int(a.Port) - int(b.Port)
		})
		eps = slices.Compact(eps)
		if len(eps) == 0 {
			delete(m.Endpoints, k)
			continue
		}
		m.Endpoints[k] = eps
	}
}

func cmpString(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// ErrNoEndpoints marks a model refused because a required service has no
// healthy instance: pushing it would empty a cluster Envoy needs.
var ErrNoEndpoints = errors.New("no healthy endpoint")

// Validate reports every reason the model must not be pushed: no policy,
// a required service without endpoints (wrapping ErrNoEndpoints), an
// endpoint without host or port, no listener port.
func (m *Model) Validate() error {
	if m.Config == nil || m.Config.Policy() == nil {
		return fmt.Errorf("model: no %s policy", policy.Domain)
	}
	var errs []error
	for _, s := range Required(m.Config.Policy()) {
		if len(m.Endpoints[s]) == 0 {
			errs = append(errs, fmt.Errorf("model: service %s: %w", s, ErrNoEndpoints))
		}
	}
	for s, eps := range m.Endpoints {
		for _, e := range eps {
			if e.Host == "" || e.Port == 0 || e.Port > 65535 {
				errs = append(errs, fmt.Errorf("model: service %s: endpoint %q: want host:port", s, e.String()))
			}
		}
	}
	if m.Listener.Port == 0 {
		errs = append(errs, errors.New("model: the gateway listener has no port"))
	}
	return errors.Join(errs...)
}
