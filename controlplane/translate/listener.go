package translate

import (
	"time"

	mutationrulesv3 "github.com/envoyproxy/go-control-plane/envoy/config/common/mutation_rules/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	ratelimitconfv3 "github.com/envoyproxy/go-control-plane/envoy/config/ratelimit/v3"
	extauthzv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	ratelimitfilterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ratelimit/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	headermutationv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/http/early_header_mutation/header_mutation/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/envoyproxy/go-control-plane/pkg/wellknown"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/leakytokens/leaky/controlplane/model"
	"github.com/leakytokens/leaky/internal/contract"
	"github.com/leakytokens/leaky/internal/policy"
)

// ClientHeaderRegex is the RE2 regular expression (matched against the
// whole header name, as Envoy's safe_regex does) of the request headers the
// gateway removes before any filter runs: every name that begins "x-leaky-"
// with any mix of '-' and '_' after the x and after leaky, in any case,
// except exactly contract.HeaderOrg, the one a client may send. RE2 has no
// look-ahead, so "anything but org" is spelt out: the empty rest, a rest
// not starting with o, "o" and "or" alone or followed by anything else
// than the next letter of org, and org followed by more.
const ClientHeaderRegex = `(?i)x(_leaky[-_]|-leaky_).*|x-leaky-([^o].*|o([^r].*)?|or([^g].*)?|org.+)?`

// EarlyHeaderMutation is the name of the HTTP connection manager's one
// early header mutation extension.
const EarlyHeaderMutation = "envoy.http.early_header_mutation.header_mutation"

// The fixed settings of the listener (the spec's values).
const (
	statPrefix            = "leaky"
	idleTimeout           = 300 * time.Second
	requestHeadersTimeout = 10 * time.Second
	maxRequestHeadersKB   = 64
)

// listener is the gateway's listener with its one HTTP connection manager,
// whose route configuration routes says where to find (RDS, or inline in
// the static bootstrap).
func listener(m *model.Model, routes func(*hcmv3.HttpConnectionManager) error) (*listenerv3.Listener, error) {
	mgr, err := connectionManager(m.Config.Policy().Gateway)
	if err != nil {
		return nil, err
	}
	if err := routes(mgr); err != nil {
		return nil, err
	}
	cfg, err := typed("http connection manager", mgr)
	if err != nil {
		return nil, err
	}
	return &listenerv3.Listener{
		Name:    model.ListenerName,
		Address: socketAddress(m.Listener),
		FilterChains: []*listenerv3.FilterChain{{
			Filters: []*listenerv3.Filter{{
				Name:       wellknown.HTTPConnectionManager,
				ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: cfg},
			}},
		}},
	}, nil
}

// rdsRoutes points the connection manager at the route configuration over
// ADS.
func rdsRoutes() func(*hcmv3.HttpConnectionManager) error {
	return func(mgr *hcmv3.HttpConnectionManager) error {
		mgr.RouteSpecifier = &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{
			RouteConfigName: model.RouteName,
			ConfigSource:    adsSource(),
		}}
		return nil
	}
}

// connectionManager is the HTTP connection manager without its route
// specifier: path normalisation, the early removal of client x-leaky-*
// headers, a fresh x-request-id on every request, then ext_authz,
// ratelimit, ext_proc and the router, and JSON bodies for the gateway's
// own replies (see localReply).
//
// The request id names the request's reservation (the shared spec, wire
// agreement 1), so no client may choose it: use_remote_address with an
// empty internal_address_config makes every request an edge request (said
// explicitly: before Envoy 1.36 the default trusted private addresses as
// internal, whose x-request-id Envoy keeps), and on an edge request
// generate_request_id replaces any x-request-id the client sent, because
// preserve_external_request_id is false (its default; proto3 cannot write
// a false bool out, so it appears in no generated file).
func connectionManager(g policy.Gateway) (*hcmv3.HttpConnectionManager, error) {
	early, err := typed("early header mutation", &headermutationv3.HeaderMutation{
		Mutations: []*mutationrulesv3.HeaderMutation{{
			Action: &mutationrulesv3.HeaderMutation_RemoveOnMatch_{RemoveOnMatch: &mutationrulesv3.HeaderMutation_RemoveOnMatch{
				KeyMatcher: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_SafeRegex{
					SafeRegex: &matcherv3.RegexMatcher{Regex: ClientHeaderRegex},
				}},
			}},
		}},
	})
	if err != nil {
		return nil, err
	}
	filters, err := httpFilters(g)
	if err != nil {
		return nil, err
	}
	return &hcmv3.HttpConnectionManager{
		StatPrefix:                   statPrefix,
		CodecType:                    hcmv3.HttpConnectionManager_AUTO,
		NormalizePath:                wrapperspb.Bool(true),
		MergeSlashes:                 true,
		PathWithEscapedSlashesAction: hcmv3.HttpConnectionManager_REJECT_REQUEST,
		CommonHttpProtocolOptions:    &corev3.HttpProtocolOptions{IdleTimeout: durationpb.New(idleTimeout)},
		RequestHeadersTimeout:        durationpb.New(requestHeadersTimeout),
		MaxRequestHeadersKb:          wrapperspb.UInt32(maxRequestHeadersKB),
		EarlyHeaderMutationExtensions: []*corev3.TypedExtensionConfig{{
			Name:        EarlyHeaderMutation,
			TypedConfig: early,
		}},
		UseRemoteAddress:      wrapperspb.Bool(true),
		InternalAddressConfig: &hcmv3.HttpConnectionManager_InternalAddressConfig{},
		GenerateRequestId:     wrapperspb.Bool(true),
		HttpFilters:           filters,
		LocalReplyConfig:      localReply(),
	}, nil
}

// httpFilters is ext_authz, ratelimit, ext_proc and the router, in that
// order.
func httpFilters(g policy.Gateway) ([]*hcmv3.HttpFilter, error) {
	authz, err := typed("ext_authz filter", &extauthzv3.ExtAuthz{
		Services: &extauthzv3.ExtAuthz_GrpcService{GrpcService: &corev3.GrpcService{
			TargetSpecifier: envoyGRPC(model.ServiceAuthzGRPC),
			Timeout:         durationpb.New(time.Duration(g.AuthzTimeout)),
		}},
		TransportApiVersion: corev3.ApiVersion_V3,
		FailureModeAllow:    g.AuthzFailureMode == policy.FailAllow,
		WithRequestBody: &extauthzv3.BufferSettings{
			MaxRequestBytes:     g.MaxRequestBytes,
			AllowPartialMessage: true,
			PackAsBytes:         true,
		},
		StatusOnError: &typev3.HttpStatus{Code: typev3.StatusCode_ServiceUnavailable},
	})
	if err != nil {
		return nil, err
	}
	limit, err := typed("ratelimit filter", &ratelimitfilterv3.RateLimit{
		Domain:          contract.Domain,
		Timeout:         durationpb.New(time.Duration(g.RatelimitTimeout)),
		FailureModeDeny: g.RatelimitFailureMode == policy.FailDeny,
		RateLimitService: &ratelimitconfv3.RateLimitServiceConfig{
			GrpcService:         &corev3.GrpcService{TargetSpecifier: envoyGRPC(model.ServiceRatelimitGRPC)},
			TransportApiVersion: corev3.ApiVersion_V3,
		},
		EnableXRatelimitHeaders: ratelimitfilterv3.RateLimit_DRAFT_VERSION_03,
		StatusOnError:           &typev3.HttpStatus{Code: typev3.StatusCode_ServiceUnavailable},
	})
	if err != nil {
		return nil, err
	}
	meter, err := extProcFilter(g)
	if err != nil {
		return nil, err
	}
	router, err := typed("router filter", &routerv3.Router{})
	if err != nil {
		return nil, err
	}
	return []*hcmv3.HttpFilter{
		{Name: wellknown.HTTPExternalAuthorization, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: authz}},
		{Name: wellknown.HTTPRateLimit, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: limit}},
		meter,
		{Name: wellknown.Router, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: router}},
	}, nil
}

// envoyGRPC targets a cluster with Envoy's own gRPC client.
func envoyGRPC(cluster string) *corev3.GrpcService_EnvoyGrpc_ {
	return &corev3.GrpcService_EnvoyGrpc_{EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{ClusterName: cluster}}
}

// adsSource is a config source that says "over the ADS stream, v3".
func adsSource() *corev3.ConfigSource {
	return &corev3.ConfigSource{
		ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}},
		ResourceApiVersion:    corev3.ApiVersion_V3,
	}
}

// socketAddress is a TCP address.
func socketAddress(e model.Endpoint) *corev3.Address {
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Address:       e.Host,
		PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: e.Port},
	}}}
}
