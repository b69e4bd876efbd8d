package standin

import (
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	extauthzv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	ratelimitfilterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ratelimit/v3"
)

// routeTable is a compiled RouteConfiguration.
type routeTable struct {
	name   string
	vhosts []*virtualHost
}

type virtualHost struct {
	name    string
	domains []string // lower case; "*", "*suffix", "prefix*" or exact
	routes  []*route
}

// route is one compiled Route: a prefix match and a route action.
type route struct {
	name          string
	prefix        string
	cluster       string
	timeout       time.Duration // 0: none
	rewrite       bool
	prefixRewrite string
	retry         *retryPolicy
	// The typed_per_filter_config by filter name: ExtAuthzPerRoute's and
	// ExtProcPerRoute's disabled, and the rules of a RateLimitPerRoute.
	authzOff   map[string]bool
	extProcOff map[string]bool
	limits     map[string][]rateLimitRule
}

// label names the route in metrics and logs.
func (r *route) label() string {
	if r.name != "" {
		return r.name
	}
	return r.prefix
}

type retryPolicy struct {
	on5xx, onGatewayError, onReset, onConnectFailure bool
	retries                                          int
	base, max                                        time.Duration
}

// rateLimitRule is one RateLimit: the descriptor its actions build.
type rateLimitRule struct {
	actions []headerAction
	hits    hitsAddend
}

type headerAction struct {
	header       string // lower case
	key          string
	skipIfAbsent bool
}

// hitsAddend is a fixed number or a request header's value (the only
// substitution format command the stand-in implements: %REQ(name)%).
type hitsAddend struct {
	set    bool
	number uint64
	header string // lower case; "" for a fixed number
}

// Envoy's defaults where a route leaves a field out.
const (
	defaultRouteTimeout = 15 * time.Second
	defaultRetryBase    = 25 * time.Millisecond
	maxHitsAddend       = 1_000_000_000
)

var reqFormat = regexp.MustCompile(`^%REQ\(([^()?:%]+)\)%$`)

func (c *compiler) routeConfiguration(rc *routev3.RouteConfiguration) (*routeTable, error) {
	if err := c.allow.check(rc.ProtoReflect(), ""); err != nil {
		return nil, err
	}
	out := &routeTable{name: rc.GetName()}
	for i, vh := range rc.GetVirtualHosts() {
		v := &virtualHost{name: vh.GetName()}
		if len(vh.GetDomains()) == 0 {
			return nil, fmt.Errorf("virtual_hosts[%d].domains: at least one domain is required", i)
		}
		for _, d := range vh.GetDomains() {
			v.domains = append(v.domains, strings.ToLower(d))
		}
		for j, r := range vh.GetRoutes() {
			cr, err := compileRoute(r)
			if err != nil {
				return nil, fmt.Errorf("virtual_hosts[%d].routes[%d]: %w", i, j, err)
			}
			v.routes = append(v.routes, cr)
		}
		out.vhosts = append(out.vhosts, v)
	}
	return out, nil
}

func compileRoute(r *routev3.Route) (*route, error) {
	m, a := r.GetMatch(), r.GetRoute()
	if _, ok := m.GetPathSpecifier().(*routev3.RouteMatch_Prefix); !ok {
		return nil, errors.New("match: a prefix is required (the only match the stand-in implements)")
	}
	if a == nil || a.GetCluster() == "" {
		return nil, errors.New("route.cluster is required (the only action the stand-in implements)")
	}
	out := &route{
		name: r.GetName(), prefix: m.GetPrefix(), cluster: a.GetCluster(), timeout: defaultRouteTimeout,
		authzOff: map[string]bool{}, extProcOff: map[string]bool{}, limits: map[string][]rateLimitRule{},
	}
	if a.GetTimeout() != nil {
		out.timeout = a.GetTimeout().AsDuration()
	}
	if a.GetPrefixRewrite() != "" {
		out.rewrite, out.prefixRewrite = true, a.GetPrefixRewrite()
	}
	if p := a.GetRetryPolicy(); p != nil {
		rp, err := compileRetry(p)
		if err != nil {
			return nil, fmt.Errorf("route.retry_policy: %w", err)
		}
		out.retry = rp
	}
	for _, name := range sortedKeys(r.GetTypedPerFilterConfig()) {
		cfg := r.GetTypedPerFilterConfig()[name]
		var err error
		switch cfg.MessageName() {
		case (&extauthzv3.ExtAuthzPerRoute{}).ProtoReflect().Descriptor().FullName():
			var pr extauthzv3.ExtAuthzPerRoute
			if err = cfg.UnmarshalTo(&pr); err == nil {
				out.authzOff[name] = pr.GetDisabled()
			}
		case (&extprocv3.ExtProcPerRoute{}).ProtoReflect().Descriptor().FullName():
			var pr extprocv3.ExtProcPerRoute
			if err = cfg.UnmarshalTo(&pr); err == nil {
				out.extProcOff[name] = pr.GetDisabled()
			}
		case (&ratelimitfilterv3.RateLimitPerRoute{}).ProtoReflect().Descriptor().FullName():
			var pr ratelimitfilterv3.RateLimitPerRoute
			if err = cfg.UnmarshalTo(&pr); err == nil {
				out.limits[name], err = compileRateLimits(pr.GetRateLimits())
			}
		default:
			err = fmt.Errorf("per-route type %s is %w", cfg.MessageName(), errNotImplemented)
		}
		if err != nil {
			return nil, fmt.Errorf("typed_per_filter_config[%q]: %w", name, err)
		}
	}
	return out, nil
}

func compileRetry(p *routev3.RetryPolicy) (*retryPolicy, error) {
	out := &retryPolicy{retries: 1, base: defaultRetryBase}
	for _, on := range strings.Split(p.GetRetryOn(), ",") {
		switch strings.TrimSpace(on) {
		case "5xx":
			out.on5xx = true
		case "gateway-error":
			out.onGatewayError = true
		case "reset":
			out.onReset = true
		case "connect-failure":
			out.onConnectFailure = true
		case "":
		default:
			return nil, fmt.Errorf("retry_on %q is %w (5xx, gateway-error, reset, connect-failure are)", on, errNotImplemented)
		}
	}
	if n := p.GetNumRetries(); n != nil {
		out.retries = int(n.GetValue())
	}
	if b := p.GetRetryBackOff(); b != nil {
		if b.GetBaseInterval().AsDuration() <= 0 {
			return nil, errors.New("retry_back_off.base_interval must be above 0")
		}
		out.base = b.GetBaseInterval().AsDuration()
		if b.GetMaxInterval() != nil {
			out.max = b.GetMaxInterval().AsDuration()
			if out.max < out.base {
				return nil, errors.New("retry_back_off.max_interval must not be below base_interval")
			}
		}
	}
	if out.max == 0 {
		out.max = 10 * out.base
	}
	return out, nil
}

func compileRateLimits(limits []*routev3.RateLimit) ([]rateLimitRule, error) {
	var out []rateLimitRule
	for i, rl := range limits {
		var rule rateLimitRule
		if len(rl.GetActions()) == 0 {
			return nil, fmt.Errorf("rate_limits[%d].actions: at least one action is required", i)
		}
		for j, a := range rl.GetActions() {
			rh := a.GetRequestHeaders()
			if rh == nil || rh.GetHeaderName() == "" || rh.GetDescriptorKey() == "" {
				return nil, fmt.Errorf("rate_limits[%d].actions[%d]: request_headers with header_name and descriptor_key is required", i, j)
			}
			rule.actions = append(rule.actions, headerAction{
				header: strings.ToLower(rh.GetHeaderName()), key: rh.GetDescriptorKey(), skipIfAbsent: rh.GetSkipIfAbsent(),
			})
		}
		if h := rl.GetHitsAddend(); h != nil {
			hits, err := compileHits(h)
			if err != nil {
				return nil, fmt.Errorf("rate_limits[%d].hits_addend: %w", i, err)
			}
			rule.hits = hits
		}
		out = append(out, rule)
	}
	return out, nil
}

func compileHits(h *routev3.RateLimit_HitsAddend) (hitsAddend, error) {
	switch {
	case h.GetNumber() != nil && h.GetFormat() != "":
		return hitsAddend{}, errors.New("number and format are exclusive")
	case h.GetNumber() != nil:
		if h.GetNumber().GetValue() > maxHitsAddend {
			return hitsAddend{}, fmt.Errorf("number %d is above %d", h.GetNumber().GetValue(), maxHitsAddend)
		}
		return hitsAddend{set: true, number: h.GetNumber().GetValue()}, nil
	case h.GetFormat() != "":
		m := reqFormat.FindStringSubmatch(h.GetFormat())
		if m == nil {
			return hitsAddend{}, fmt.Errorf("format %q is %w (only %%REQ(header)%% is)", h.GetFormat(), errNotImplemented)
		}
		return hitsAddend{set: true, header: strings.ToLower(m[1])}, nil
	}
	return hitsAddend{}, nil
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
