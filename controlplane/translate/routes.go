package translate

import (
	"maps"
	"slices"
	"time"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	extauthzv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	ratelimitfilterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ratelimit/v3"
	"github.com/envoyproxy/go-control-plane/pkg/wellknown"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/leakytokens/leaky/controlplane/model"
	"github.com/leakytokens/leaky/internal/contract"
	"github.com/leakytokens/leaky/internal/policy"
)

// The fixed settings of the routes (the spec's values).
const (
	// serviceTimeout bounds a call to our own HTTP APIs (auth, analytics).
	serviceTimeout = 15 * time.Second
	// RetryOn is the retry policy's conditions on provider routes: never
	// a 429, which is an answer, not a failure.
	RetryOn          = "5xx,reset,connect-failure"
	retryBaseBackoff = 100 * time.Millisecond
	retryMaxBackoff  = time.Second
	// HitsAddendFormat is the rate-limit descriptors' hits_addend: the
	// estimate authz put in its header, as a substitution format.
	HitsAddendFormat = "%REQ(" + contract.HeaderEstimate + ")%"
)

// routeConfig is the one route configuration: authz's public APIs without
// ext_authz, the token and analytics APIs, then each provider's two
// prefixes with retries and the rate limits, providers sorted by name.
// Only the provider routes are metered: every other route turns ext_proc
// off.
func routeConfig(m *model.Model) (*routev3.RouteConfiguration, error) {
	g := m.Config.Policy().Gateway
	noAuthz, err := typed("ext_authz per-route config", &extauthzv3.ExtAuthzPerRoute{
		Override: &extauthzv3.ExtAuthzPerRoute_Disabled{Disabled: true},
	})
	if err != nil {
		return nil, err
	}
	noMeter, err := noExtProc()
	if err != nil {
		return nil, err
	}
	public := map[string]*anypb.Any{wellknown.HTTPExternalAuthorization: noAuthz, ExtProcFilter: noMeter}
	unmetered := map[string]*anypb.Any{ExtProcFilter: noMeter}
	routes := []*routev3.Route{
		prefixRoute("/api/v1/auth/", model.ServiceAuthzHTTP, serviceTimeout, public),
		prefixRoute("/oauth2/", model.ServiceAuthzHTTP, serviceTimeout, public),
		prefixRoute("/.well-known/", model.ServiceAuthzHTTP, serviceTimeout, public),
		prefixRoute("/api/v1/tokens/", model.ServiceRatelimitHTTP, time.Duration(g.UpstreamTimeout), unmetered),
		prefixRoute("/api/v1/analytics/", model.ServiceAnalyticsHTTP, serviceTimeout, unmetered),
	}
	for _, p := range slices.Sorted(maps.Keys(m.Config.Policy().Providers)) {
		for _, r := range []struct{ prefix, rewrite string }{{"/" + p + "/", g.ProviderPath(p)}, {"/api/v1/" + p + "/", ""}} {
			route, err := providerRoute(r.prefix, p, r.rewrite, g)
			if err != nil {
				return nil, err
			}
			routes = append(routes, route)
		}
	}
	return &routev3.RouteConfiguration{
		Name: model.RouteName,
		VirtualHosts: []*routev3.VirtualHost{{
			Name:    model.VirtualHost,
			Domains: []string{"*"},
			Routes:  routes,
		}},
	}, nil
}

// prefixRoute sends every path under prefix to cluster, bounded by timeout,
// with perFilter as its typed_per_filter_config.
func prefixRoute(prefix, cluster string, timeout time.Duration, perFilter map[string]*anypb.Any) *routev3.Route {
	return &routev3.Route{
		Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: prefix}},
		Action: &routev3.Route_Route{Route: &routev3.RouteAction{
			ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: cluster},
			Timeout:          durationpb.New(timeout),
		}},
		TypedPerFilterConfig: perFilter,
	}
}

// providerRoute sends prefix to provider p, rewritten to rewrite when it is
// not empty, with the gateway's timeout and retries and the rate limits.
func providerRoute(prefix, p, rewrite string, g policy.Gateway) (*routev3.Route, error) {
	limits, err := typed("ratelimit per-route config", &ratelimitfilterv3.RateLimitPerRoute{RateLimits: rateLimits()})
	if err != nil {
		return nil, err
	}
	r := prefixRoute(prefix, model.ProviderService(p), time.Duration(g.UpstreamTimeout),
		map[string]*anypb.Any{wellknown.HTTPRateLimit: limits})
	action := r.GetRoute()
	action.PrefixRewrite = rewrite
	action.RetryPolicy = &routev3.RetryPolicy{
		RetryOn:    RetryOn,
		NumRetries: wrapperspb.UInt32(uint32(g.Retries)),
		RetryBackOff: &routev3.RetryPolicy_RetryBackOff{
			BaseInterval: durationpb.New(retryBaseBackoff),
			MaxInterval:  durationpb.New(retryMaxBackoff),
		},
	}
	return r, nil
}

// rateLimits builds the descriptors of the wire contract from the headers
// authz set: (provider)(tier)(user), (provider)(org), (provider), each
// charged the estimate, and last (request_id) from the x-request-id the
// connection manager generated, which is no bucket but names the
// reservation the ratelimit service makes for the request (the shared
// spec, wire agreement 1). A missing header drops that descriptor (Envoy's
// semantics with skip_if_absent false): no org header, no org descriptor.
func rateLimits() []*routev3.RateLimit {
	provider := func() *routev3.RateLimit_Action { return header(contract.HeaderProvider, contract.KeyProvider) }
	descriptors := [][]*routev3.RateLimit_Action{
		{provider(), header(contract.HeaderTier, contract.KeyTier), header(contract.HeaderUserID, contract.KeyUser)},
		{provider(), header(contract.HeaderOrgID, contract.KeyOrg)},
		{provider()},
		{header(contract.HeaderRequestID, contract.KeyRequestID)},
	}
	out := make([]*routev3.RateLimit, len(descriptors))
	for i, actions := range descriptors {
		out[i] = &routev3.RateLimit{
			Actions:    actions,
			HitsAddend: &routev3.RateLimit_HitsAddend{Format: HitsAddendFormat},
		}
	}
	return out
}

// header is the action that appends (key, the value of header name).
func header(name, key string) *routev3.RateLimit_Action {
	return &routev3.RateLimit_Action{ActionSpecifier: &routev3.RateLimit_Action_RequestHeaders_{
		RequestHeaders: &routev3.RateLimit_Action_RequestHeaders{HeaderName: name, DescriptorKey: key},
	}}
}
