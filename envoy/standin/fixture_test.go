package standin

import (
	"net"
	"slices"
	"strconv"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	mutationrulesv3 "github.com/envoyproxy/go-control-plane/envoy/config/common/mutation_rules/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	ratelimitconfv3 "github.com/envoyproxy/go-control-plane/envoy/config/ratelimit/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	extauthzv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	ratelimitfilterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ratelimit/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	headermutationv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/http/early_header_mutation/header_mutation/v3"
	upstreamhttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/leakytokens/leaky/controlplane/model"
	"github.com/leakytokens/leaky/internal/contract"
)

// Filter names as the generated configuration spells them.
const (
	filterHCM       = "envoy.filters.network.http_connection_manager"
	filterExtAuthz  = "envoy.filters.http.ext_authz"
	filterRateLimit = "envoy.filters.http.ratelimit"
	filterExtProc   = "envoy.filters.http.ext_proc"
	filterRouter    = "envoy.filters.http.router"
)

// clientHeaderRegex matches every x-leaky-*/x_leaky_* name (any mix of -
// and _) except exactly x-leaky-org, spelt out for RE2.
const clientHeaderRegex = `x_leaky[-_].*|x-leaky_.*|x-leaky-(|[^o].*|o|o[^r].*|or|or[^g].*|org.+)`

// fixture is the i8-spec configuration for one test: the gateway settings
// of the policy and the endpoints of every cluster (a cluster with none
// gets an empty ClusterLoadAssignment).
type fixture struct {
	authzFailureAllow bool
	rlFailureDeny     bool
	maxBody           uint32
	authzTimeout      time.Duration
	rlTimeout         time.Duration
	upstreamTimeout   time.Duration
	retries           uint32
	providers         []string          // sorted
	rewrite           map[string]string // provider → prefix rewrite (default "/")
	endpoints         map[string][]string
	// meter adds the ext_proc filter (disabled on every route but the
	// providers') and the request_id descriptor, with meterAllow as its
	// failure_mode_allow and meterTimeout as its message_timeout.
	meter        bool
	meterAllow   bool
	meterTimeout time.Duration
}

func defaultFixture() fixture {
	return fixture{
		maxBody: 1 << 20, authzTimeout: 5 * time.Second, rlTimeout: 5 * time.Second,
		upstreamTimeout: 30 * time.Second, retries: 2,
		providers:    []string{"gemini", "openai", "qwen"},
		rewrite:      map[string]string{"qwen": "/compatible-mode/"},
		endpoints:    map[string][]string{},
		meterTimeout: waitBound,
	}
}

// resources is the snapshot's content, by type.
func (f fixture) resources(t testing.TB) map[string][]types.Resource {
	t.Helper()
	out := map[string][]types.Resource{
		resourcev3.ListenerType: {f.listener(t)},
		resourcev3.RouteType:    {f.routes(t)},
	}
	for _, name := range f.clusterNames() {
		out[resourcev3.ClusterType] = append(out[resourcev3.ClusterType], f.cluster(t, name))
		out[resourcev3.EndpointType] = append(out[resourcev3.EndpointType], f.assignment(t, name))
	}
	return out
}

func (f fixture) clusterNames() []string {
	names := []string{model.ServiceAuthzGRPC, model.ServiceAuthzHTTP, model.ServiceRatelimitGRPC,
		model.ServiceRatelimitHTTP, model.ServiceAnalyticsHTTP}
	for _, p := range f.providers {
		names = append(names, model.ProviderService(p))
	}
	slices.Sort(names)
	return names
}

func mustAny(t testing.TB, m proto.Message) *anypb.Any {
	t.Helper()
	a, err := anypb.New(m)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func adsConfig() *corev3.ConfigSource {
	return &corev3.ConfigSource{
		ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}},
		ResourceApiVersion:    corev3.ApiVersion_V3,
	}
}

func envoyGRPC(cluster string) *corev3.GrpcService_EnvoyGrpc_ {
	return &corev3.GrpcService_EnvoyGrpc_{EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{ClusterName: cluster}}
}

func (f fixture) listener(t testing.TB) *listenerv3.Listener {
	return &listenerv3.Listener{
		Name: model.ListenerName,
		Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
			Address: "127.0.0.1", PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 8080},
		}}},
		FilterChains: []*listenerv3.FilterChain{{Filters: []*listenerv3.Filter{{
			Name:       filterHCM,
			ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: mustAny(t, f.connectionManager(t))},
		}}}},
	}
}

func (f fixture) connectionManager(t testing.TB) *hcmv3.HttpConnectionManager {
	early := &headermutationv3.HeaderMutation{Mutations: []*mutationrulesv3.HeaderMutation{{
		Action: &mutationrulesv3.HeaderMutation_RemoveOnMatch_{RemoveOnMatch: &mutationrulesv3.HeaderMutation_RemoveOnMatch{
			KeyMatcher: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_SafeRegex{
				SafeRegex: &matcherv3.RegexMatcher{Regex: clientHeaderRegex},
			}},
		}},
	}}}
	return &hcmv3.HttpConnectionManager{
		StatPrefix: "leaky",
		CodecType:  hcmv3.HttpConnectionManager_AUTO,
		RouteSpecifier: &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{
			RouteConfigName: model.RouteName, ConfigSource: adsConfig(),
		}},
		NormalizePath:                wrapperspb.Bool(true),
		MergeSlashes:                 true,
		PathWithEscapedSlashesAction: hcmv3.HttpConnectionManager_REJECT_REQUEST,
		CommonHttpProtocolOptions:    &corev3.HttpProtocolOptions{IdleTimeout: durationpb.New(300 * time.Second)},
		RequestHeadersTimeout:        durationpb.New(10 * time.Second),
		MaxRequestHeadersKb:          wrapperspb.UInt32(64),
		EarlyHeaderMutationExtensions: []*corev3.TypedExtensionConfig{{
			Name: "envoy.http.early_header_mutation.header_mutation", TypedConfig: mustAny(t, early),
		}},
		UseRemoteAddress:  wrapperspb.Bool(true),
		GenerateRequestId: wrapperspb.Bool(true),
		HttpFilters:       f.httpFilters(t),
		LocalReplyConfig:  jsonLocalReply(),
	}
}

func (f fixture) httpFilters(t testing.TB) []*hcmv3.HttpFilter {
	authz := &extauthzv3.ExtAuthz{
		Services: &extauthzv3.ExtAuthz_GrpcService{GrpcService: &corev3.GrpcService{
			TargetSpecifier: envoyGRPC(model.ServiceAuthzGRPC), Timeout: durationpb.New(f.authzTimeout),
		}},
		TransportApiVersion: corev3.ApiVersion_V3,
		FailureModeAllow:    f.authzFailureAllow,
		WithRequestBody:     &extauthzv3.BufferSettings{MaxRequestBytes: f.maxBody, AllowPartialMessage: true, PackAsBytes: true},
		StatusOnError:       &typev3.HttpStatus{Code: typev3.StatusCode_ServiceUnavailable},
	}
	limit := &ratelimitfilterv3.RateLimit{
		Domain:          contract.Domain,
		Timeout:         durationpb.New(f.rlTimeout),
		FailureModeDeny: f.rlFailureDeny,
		RateLimitService: &ratelimitconfv3.RateLimitServiceConfig{
			GrpcService:         &corev3.GrpcService{TargetSpecifier: envoyGRPC(model.ServiceRatelimitGRPC)},
			TransportApiVersion: corev3.ApiVersion_V3,
		},
		EnableXRatelimitHeaders: ratelimitfilterv3.RateLimit_DRAFT_VERSION_03,
		StatusOnError:           &typev3.HttpStatus{Code: typev3.StatusCode_ServiceUnavailable},
	}
	typed := func(name string, m proto.Message) *hcmv3.HttpFilter {
		return &hcmv3.HttpFilter{Name: name, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(t, m)}}
	}
	filters := []*hcmv3.HttpFilter{typed(filterExtAuthz, authz), typed(filterRateLimit, limit)}
	if f.meter {
		filters = append(filters, typed(filterExtProc, &extprocv3.ExternalProcessor{
			GrpcService:      &corev3.GrpcService{TargetSpecifier: envoyGRPC(model.ServiceRatelimitGRPC)},
			FailureModeAllow: f.meterAllow,
			MessageTimeout:   durationpb.New(f.meterTimeout),
			ProcessingMode: &extprocv3.ProcessingMode{
				RequestHeaderMode: extprocv3.ProcessingMode_SEND, RequestBodyMode: extprocv3.ProcessingMode_BUFFERED,
				ResponseHeaderMode: extprocv3.ProcessingMode_SEND, ResponseBodyMode: extprocv3.ProcessingMode_STREAMED,
				RequestTrailerMode: extprocv3.ProcessingMode_SKIP, ResponseTrailerMode: extprocv3.ProcessingMode_SKIP,
			},
		}))
	}
	return append(filters, typed(filterRouter, &routerv3.Router{}))
}

func (f fixture) routes(t testing.TB) *routev3.RouteConfiguration {
	authzOff := map[string]*anypb.Any{filterExtAuthz: mustAny(t, &extauthzv3.ExtAuthzPerRoute{
		Override: &extauthzv3.ExtAuthzPerRoute_Disabled{Disabled: true},
	})}
	plain := func(prefix, cluster string, timeout time.Duration) *routev3.Route {
		return &routev3.Route{
			Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: prefix}},
			Action: &routev3.Route_Route{Route: &routev3.RouteAction{
				ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: cluster}, Timeout: durationpb.New(timeout),
			}},
		}
	}
	var routes []*routev3.Route
	for _, p := range []string{"/api/v1/auth/", "/oauth2/", "/.well-known/"} {
		r := plain(p, model.ServiceAuthzHTTP, 15*time.Second)
		r.TypedPerFilterConfig = authzOff
		routes = append(routes, r)
	}
	routes = append(routes, plain("/api/v1/tokens/", model.ServiceRatelimitHTTP, f.upstreamTimeout),
		plain("/api/v1/analytics/", model.ServiceAnalyticsHTTP, 15*time.Second))
	if f.meter {
		off := mustAny(t, &extprocv3.ExtProcPerRoute{Override: &extprocv3.ExtProcPerRoute_Disabled{Disabled: true}})
		for _, r := range routes {
			if r.TypedPerFilterConfig == nil {
				r.TypedPerFilterConfig = map[string]*anypb.Any{}
			} else {
				r.TypedPerFilterConfig = map[string]*anypb.Any{filterExtAuthz: r.TypedPerFilterConfig[filterExtAuthz]}
			}
			r.TypedPerFilterConfig[filterExtProc] = off
		}
	}
	for _, p := range f.providers {
		rewrite := "/"
		if r, ok := f.rewrite[p]; ok {
			rewrite = r
		}
		first := f.providerRoute(t, "/"+p+"/", model.ProviderService(p))
		first.GetRoute().PrefixRewrite = rewrite
		routes = append(routes, first, f.providerRoute(t, "/api/v1/"+p+"/", model.ProviderService(p)))
	}
	return &routev3.RouteConfiguration{Name: model.RouteName, VirtualHosts: []*routev3.VirtualHost{{
		Name: model.VirtualHost, Domains: []string{"*"}, Routes: routes,
	}}}
}

func (f fixture) providerRoute(t testing.TB, prefix, cluster string) *routev3.Route {
	header := func(name, key string) *routev3.RateLimit_Action {
		return &routev3.RateLimit_Action{ActionSpecifier: &routev3.RateLimit_Action_RequestHeaders_{
			RequestHeaders: &routev3.RateLimit_Action_RequestHeaders{HeaderName: name, DescriptorKey: key},
		}}
	}
	hits := &routev3.RateLimit_HitsAddend{Format: "%REQ(" + contract.HeaderEstimate + ")%"}
	provider := header(contract.HeaderProvider, contract.KeyProvider)
	limits := &ratelimitfilterv3.RateLimitPerRoute{RateLimits: []*routev3.RateLimit{
		{Actions: []*routev3.RateLimit_Action{provider, header(contract.HeaderTier, contract.KeyTier), header(contract.HeaderUserID, contract.KeyUser)}, HitsAddend: hits},
		{Actions: []*routev3.RateLimit_Action{provider, header(contract.HeaderOrgID, contract.KeyOrg)}, HitsAddend: hits},
		{Actions: []*routev3.RateLimit_Action{provider}, HitsAddend: hits},
	}}
	if f.meter {
		limits.RateLimits = append(limits.RateLimits, &routev3.RateLimit{
			Actions: []*routev3.RateLimit_Action{header(contract.HeaderRequestID, contract.KeyRequestID)}, HitsAddend: hits})
	}
	return &routev3.Route{
		Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: prefix}},
		Action: &routev3.Route_Route{Route: &routev3.RouteAction{
			ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: cluster},
			Timeout:          durationpb.New(f.upstreamTimeout),
			RetryPolicy: &routev3.RetryPolicy{
				RetryOn:    "5xx,reset,connect-failure",
				NumRetries: wrapperspb.UInt32(f.retries),
				RetryBackOff: &routev3.RetryPolicy_RetryBackOff{
					BaseInterval: durationpb.New(100 * time.Millisecond), MaxInterval: durationpb.New(time.Second),
				},
			},
		}},
		TypedPerFilterConfig: map[string]*anypb.Any{filterRateLimit: mustAny(t, limits)},
	}
}

func (f fixture) cluster(t testing.TB, name string) *clusterv3.Cluster {
	c := &clusterv3.Cluster{
		Name:                 name,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
		EdsClusterConfig:     &clusterv3.Cluster_EdsClusterConfig{EdsConfig: adsConfig(), ServiceName: name},
		ConnectTimeout:       durationpb.New(time.Second),
		LbPolicy:             clusterv3.Cluster_ROUND_ROBIN,
		CircuitBreakers: &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{{
			MaxConnections: wrapperspb.UInt32(1024), MaxPendingRequests: wrapperspb.UInt32(1024),
			MaxRequests: wrapperspb.UInt32(1024), MaxRetries: wrapperspb.UInt32(3),
		}}},
		OutlierDetection: &clusterv3.OutlierDetection{
			Consecutive_5Xx: wrapperspb.UInt32(5), Interval: durationpb.New(10 * time.Second),
			BaseEjectionTime: durationpb.New(30 * time.Second), MaxEjectionPercent: wrapperspb.UInt32(50),
		},
	}
	if name == model.ServiceAuthzGRPC || name == model.ServiceRatelimitGRPC {
		c.TypedExtensionProtocolOptions = map[string]*anypb.Any{httpProtocolOptions: mustAny(t, &upstreamhttpv3.HttpProtocolOptions{
			UpstreamProtocolOptions: &upstreamhttpv3.HttpProtocolOptions_ExplicitHttpConfig_{ExplicitHttpConfig: &upstreamhttpv3.HttpProtocolOptions_ExplicitHttpConfig{
				ProtocolConfig: &upstreamhttpv3.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions{Http2ProtocolOptions: &corev3.Http2ProtocolOptions{}},
			}},
		})}
	}
	return c
}

func (f fixture) assignment(t testing.TB, name string) *endpointv3.ClusterLoadAssignment {
	cla := &endpointv3.ClusterLoadAssignment{ClusterName: name}
	eps := f.endpoints[name]
	if len(eps) == 0 {
		return cla
	}
	loc := &endpointv3.LocalityLbEndpoints{}
	for _, hp := range eps {
		host, port, err := net.SplitHostPort(hp)
		if err != nil {
			t.Fatal(err)
		}
		n, _ := strconv.Atoi(port)
		loc.LbEndpoints = append(loc.LbEndpoints, &endpointv3.LbEndpoint{HostIdentifier: &endpointv3.LbEndpoint_Endpoint{
			Endpoint: &endpointv3.Endpoint{Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
				Address: host, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: uint32(n)},
			}}}},
		}})
	}
	cla.Endpoints = []*endpointv3.LocalityLbEndpoints{loc}
	return cla
}
