package translate

import (
	"cmp"
	"net/netip"
	"slices"
	"strings"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	upstreamhttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/leakytokens/leaky/controlplane/model"
)

// HTTPProtocolOptions is the key of a cluster's upstream HTTP protocol
// options in typed_extension_protocol_options.
const HTTPProtocolOptions = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"

// The fixed settings of every cluster (the spec's values).
const (
	maxConnections     = 1024
	maxPendingRequests = 1024
	maxRequests        = 1024
	// maxGRPCRequests is a gRPC cluster's: a metered request holds an
	// ext_proc stream to ratelimit for as long as its response streams,
	// beside the ShouldRateLimit calls of new requests, so 1024 streamed
	// completions at once would refuse every new request's rate-limit call.
	maxGRPCRequests    = 16384
	maxRetries         = 3
	consecutive5xx     = 5
	outlierInterval    = 10 * time.Second
	baseEjectionTime   = 30 * time.Second
	maxEjectionPercent = 50
)

// speaksGRPC says whether a service is spoken to in gRPC, so over HTTP/2.
func speaksGRPC(service string) bool {
	return service == model.ServiceAuthzGRPC || service == model.ServiceRatelimitGRPC
}

// cluster is service name's cluster; discovery sets how its endpoints are
// found (EDS over ADS, or inline in the static bootstrap).
func cluster(m *model.Model, name string, discovery func(*clusterv3.Cluster)) (*clusterv3.Cluster, error) {
	c := &clusterv3.Cluster{
		Name:           name,
		ConnectTimeout: durationpb.New(time.Duration(m.Config.Policy().Gateway.ConnectTimeout)),
		LbPolicy:       clusterv3.Cluster_ROUND_ROBIN,
		CircuitBreakers: &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{{
			MaxConnections:     wrapperspb.UInt32(maxConnections),
			MaxPendingRequests: wrapperspb.UInt32(maxPendingRequests),
			MaxRequests:        wrapperspb.UInt32(maxRequests),
			MaxRetries:         wrapperspb.UInt32(maxRetries),
		}}},
		OutlierDetection: &clusterv3.OutlierDetection{
			Consecutive_5Xx:    wrapperspb.UInt32(consecutive5xx),
			Interval:           durationpb.New(outlierInterval),
			BaseEjectionTime:   durationpb.New(baseEjectionTime),
			MaxEjectionPercent: wrapperspb.UInt32(maxEjectionPercent),
		},
	}
	if speaksGRPC(name) {
		c.CircuitBreakers.Thresholds[0].MaxRequests = wrapperspb.UInt32(maxGRPCRequests)
		opts, err := http2Options()
		if err != nil {
			return nil, err
		}
		c.TypedExtensionProtocolOptions = map[string]*anypb.Any{HTTPProtocolOptions: opts}
	}
	discovery(c)
	return c, nil
}

// http2Options makes a cluster speak HTTP/2 (gRPC) to its endpoints.
func http2Options() (*anypb.Any, error) {
	return typed("upstream HTTP/2 options", &upstreamhttpv3.HttpProtocolOptions{
		UpstreamProtocolOptions: &upstreamhttpv3.HttpProtocolOptions_ExplicitHttpConfig_{
			ExplicitHttpConfig: &upstreamhttpv3.HttpProtocolOptions_ExplicitHttpConfig{
				ProtocolConfig: &upstreamhttpv3.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions{
					Http2ProtocolOptions: &corev3.Http2ProtocolOptions{},
				},
			},
		},
	})
}

// edsDiscovery takes the cluster's endpoints from EDS over ADS, under the
// cluster's own name.
func edsDiscovery(name string) func(*clusterv3.Cluster) {
	return func(c *clusterv3.Cluster) {
		c.ClusterDiscoveryType = &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS}
		c.EdsClusterConfig = &clusterv3.Cluster_EdsClusterConfig{EdsConfig: adsSource(), ServiceName: name}
	}
}

// inlineDiscovery puts the endpoints in the cluster itself: STATIC when
// every host is an IP address, else STRICT_DNS (Envoy resolves the names).
func inlineDiscovery(eps []model.Endpoint) func(*clusterv3.Cluster) {
	return func(c *clusterv3.Cluster) {
		kind := clusterv3.Cluster_STATIC
		for _, e := range eps {
			if _, err := netip.ParseAddr(e.Host); err != nil {
				kind = clusterv3.Cluster_STRICT_DNS
			}
		}
		c.ClusterDiscoveryType = &clusterv3.Cluster_Type{Type: kind}
		c.LoadAssignment = loadAssignment(c.Name, eps)
	}
}

// locality names the one locality of every load assignment.
const locality = "leaky"

// loadAssignment is a cluster's endpoints in one locality, sorted and
// without duplicates whatever order the model gives them in (so that equal
// sets give equal versions); none is an empty assignment (the gateway
// answers 503 "no healthy upstream").
func loadAssignment(name string, eps []model.Endpoint) *endpointv3.ClusterLoadAssignment {
	cla := &endpointv3.ClusterLoadAssignment{ClusterName: name}
	if len(eps) == 0 {
		return cla
	}
	eps = slices.Clone(eps)
	slices.SortFunc(eps, func(a, b model.Endpoint) int {
		return cmp.Or(strings.Compare(a.Host, b.Host), cmp.Compare(a.Port, b.Port))
	})
	eps = slices.Compact(eps)
	lb := make([]*endpointv3.LbEndpoint, len(eps))
	for i, e := range eps {
		lb[i] = &endpointv3.LbEndpoint{HostIdentifier: &endpointv3.LbEndpoint_Endpoint{
			Endpoint: &endpointv3.Endpoint{Address: socketAddress(e)},
		}}
	}
	// One named locality of weight 1: Envoy needs neither, but gRPC's xDS
	// client refuses a locality without an identity and drops one without
	// weight (its weighted targets would have nothing to pick from).
	cla.Endpoints = []*endpointv3.LocalityLbEndpoints{{
		Locality:            &corev3.Locality{Region: locality},
		LbEndpoints:         lb,
		LoadBalancingWeight: wrapperspb.UInt32(1),
	}}
	return cla
}
