package translate

import (
	"fmt"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/envoyproxy/go-control-plane/pkg/wellknown"

	"github.com/leakytokens/leaky/controlplane/model"
)

// ProxylessServices are the services a gRPC client can resolve through the
// control plane itself, with grpc-go's xDS resolver and a target such as
// "xds:///leaky-ratelimit-grpc" (proxyless gRPC: no Envoy between).
var ProxylessServices = []string{model.ServiceAuthzGRPC, model.ServiceRatelimitGRPC}

// Proxyless builds the snapshot served to proxyless gRPC clients: for each
// of ProxylessServices an API listener named after the service (the name
// the client's target asks for) whose inline route sends every call to the
// service's cluster, and those clusters and load assignments as Translate
// builds them. It is a separate snapshot because Envoy and the gateway
// stand-in ask for every listener (a wildcard) and have no use for API
// listeners, while a gRPC client asks for its target's listener by name.
func Proxyless(m *model.Model) (*cachev3.Snapshot, error) {
	if err := check(m, true); err != nil {
		return nil, err
	}
	res := map[resourcev3.Type][]types.Resource{}
	for _, name := range ProxylessServices {
		lis, err := apiListener(name)
		if err != nil {
			return nil, err
		}
		c, err := cluster(m, name, edsDiscovery(name))
		if err != nil {
			return nil, err
		}
		res[resourcev3.ListenerType] = append(res[resourcev3.ListenerType], lis)
		res[resourcev3.ClusterType] = append(res[resourcev3.ClusterType], c)
		res[resourcev3.EndpointType] = append(res[resourcev3.EndpointType], loadAssignment(name, m.Endpoints[name]))
	}
	version, err := Version(res)
	if err != nil {
		return nil, err
	}
	snap, err := cachev3.NewSnapshot(version, res)
	if err != nil {
		return nil, fmt.Errorf("translate: %w", err)
	}
	if err := snap.Consistent(); err != nil {
		return nil, fmt.Errorf("translate: inconsistent proxyless snapshot: %w", err)
	}
	return snap, nil
}

// apiListener is service's API listener: an HTTP connection manager with
// an inline route configuration (one virtual host for the service's name,
// every path to its cluster) and the router filter, which is all a gRPC
// client's xDS resolver reads.
func apiListener(service string) (*listenerv3.Listener, error) {
	router, err := typed("router", &routerv3.Router{})
	if err != nil {
		return nil, err
	}
	mgr, err := typed("api listener connection manager", &hcmv3.HttpConnectionManager{
		StatPrefix: service,
		RouteSpecifier: &hcmv3.HttpConnectionManager_RouteConfig{RouteConfig: &routev3.RouteConfiguration{
			Name: service,
			VirtualHosts: []*routev3.VirtualHost{{
				Name:    service,
				Domains: []string{service},
				Routes: []*routev3.Route{{
					Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: ""}},
					Action: &routev3.Route_Route{Route: &routev3.RouteAction{
						ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: service},
					}},
				}},
			}},
		}},
		HttpFilters: []*hcmv3.HttpFilter{{Name: wellknown.Router, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: router}}},
	})
	if err != nil {
		return nil, err
	}
	return &listenerv3.Listener{Name: service, ApiListener: &listenerv3.ApiListener{ApiListener: mgr}}, nil
}
