package translate

import (
	"errors"
	"fmt"
	"net/netip"
	"time"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/leakytokens/leaky/controlplane/model"
)

// Names and defaults of the bootstraps.
const (
	// XDSCluster is the bootstrap's static cluster to the control plane.
	XDSCluster = "xds_cluster"
	// EnvoyNode is the node id of envoy/envoy.yaml's Envoy.
	EnvoyNode = "leaky-envoy"
	// StaticNode and NodeCluster identify the Envoy of the static
	// bootstrap (it talks to no control plane, so only its logs and stats
	// see them).
	StaticNode  = "leaky-gateway-static"
	NodeCluster = "leaky"
	// xdsConnectTimeout bounds a connection to the control plane.
	xdsConnectTimeout = time.Second
)

// DefaultAdmin is the Envoy admin interface's address in both bootstraps:
// loopback only, as the admin API can stop Envoy and change its
// configuration.
func DefaultAdmin() model.Endpoint { return model.Endpoint{Host: "127.0.0.1", Port: 9901} }

// Static is the whole configuration of a valid model as one Envoy
// bootstrap with no control plane: the listener with the route
// configuration inline and every cluster with its endpoints inline, built
// by the functions that build Translate's resources. Its admin interface
// is DefaultAdmin. The Runtime and RateLimitConfig resources are not part
// of it (they are for the ratelimit service and authz, not for Envoy).
func Static(m *model.Model) (*bootstrapv3.Bootstrap, error) {
	if err := check(m, false); err != nil {
		return nil, err
	}
	rc, err := routeConfig(m)
	if err != nil {
		return nil, err
	}
	lis, err := listener(m, func(mgr *hcmv3.HttpConnectionManager) error {
		mgr.RouteSpecifier = &hcmv3.HttpConnectionManager_RouteConfig{RouteConfig: rc}
		return nil
	})
	if err != nil {
		return nil, err
	}
	var clusters []*clusterv3.Cluster
	for _, name := range clusterNames(m) {
		c, err := cluster(m, name, inlineDiscovery(m.Endpoints[name]))
		if err != nil {
			return nil, err
		}
		clusters = append(clusters, c)
	}
	return &bootstrapv3.Bootstrap{
		Node:  &corev3.Node{Id: StaticNode, Cluster: NodeCluster},
		Admin: &bootstrapv3.Admin{Address: socketAddress(DefaultAdmin())},
		StaticResources: &bootstrapv3.Bootstrap_StaticResources{
			Listeners: []*listenerv3.Listener{lis},
			Clusters:  clusters,
		},
	}, nil
}

// Bootstrap is the bootstrap of an Envoy that takes its listeners and
// clusters (and through them its routes and endpoints) from the control
// plane at xds over one ADS stream: node identifies it to the control
// plane, cluster is its node cluster, admin must be a loopback address.
func Bootstrap(node, cluster string, xds, admin model.Endpoint) (*bootstrapv3.Bootstrap, error) {
	var errs []error
	if node == "" {
		errs = append(errs, errors.New("translate: bootstrap: empty node id"))
	}
	if cluster == "" {
		errs = append(errs, errors.New("translate: bootstrap: empty node cluster"))
	}
	if a, err := netip.ParseAddr(admin.Host); err != nil || !a.IsLoopback() || admin.Port == 0 {
		errs = append(errs, fmt.Errorf("translate: bootstrap: admin address %s: want a loopback IP address and a port (the admin API can stop Envoy)", admin))
	}
	if xds.Host == "" || xds.Port == 0 {
		errs = append(errs, fmt.Errorf("translate: bootstrap: control plane address %s: want host:port", xds))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	opts, err := http2Options()
	if err != nil {
		return nil, err
	}
	xdsCluster := &clusterv3.Cluster{
		Name:                          XDSCluster,
		ConnectTimeout:                durationpb.New(xdsConnectTimeout),
		TypedExtensionProtocolOptions: map[string]*anypb.Any{HTTPProtocolOptions: opts},
	}
	inlineDiscovery([]model.Endpoint{xds})(xdsCluster)
	return &bootstrapv3.Bootstrap{
		Node:  &corev3.Node{Id: node, Cluster: cluster},
		Admin: &bootstrapv3.Admin{Address: socketAddress(admin)},
		StaticResources: &bootstrapv3.Bootstrap_StaticResources{
			Clusters: []*clusterv3.Cluster{xdsCluster},
		},
		DynamicResources: &bootstrapv3.Bootstrap_DynamicResources{
			AdsConfig: &corev3.ApiConfigSource{
				ApiType:             corev3.ApiConfigSource_GRPC,
				TransportApiVersion: corev3.ApiVersion_V3,
				GrpcServices:        []*corev3.GrpcService{{TargetSpecifier: envoyGRPC(XDSCluster)}},
			},
			LdsConfig: adsSource(),
			CdsConfig: adsSource(),
		},
	}, nil
}
