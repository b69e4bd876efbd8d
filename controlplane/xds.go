package controlplane

import (
	"strings"
	"sync"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	clusterservice "github.com/envoyproxy/go-control-plane/envoy/service/cluster/v3"
	discoverygrpc "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	endpointservice "github.com/envoyproxy/go-control-plane/envoy/service/endpoint/v3"
	listenerservice "github.com/envoyproxy/go-control-plane/envoy/service/listener/v3"
	routeservice "github.com/envoyproxy/go-control-plane/envoy/service/route/v3"
	runtimeservice "github.com/envoyproxy/go-control-plane/envoy/service/runtime/v3"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
)

// The snapshot cache has two keys. Every node, whatever its id, is served
// the snapshot under snapshotKey (Envoy, the gateway stand-in, ratelimit
// and authz), so a node that connects later gets the current one at once;
// proxyless gRPC clients get the one under proxylessKey.
const (
	snapshotKey  = "leaky"
	proxylessKey = "leaky-proxyless"
)

// nodeGroups is the cache's node hash. A node whose user agent is a gRPC
// library ("gRPC Go", "gRPC Java", "gRPC C-core", as their xDS clients set
// user_agent_name) is a proxyless client resolving our gRPC services and
// gets translate.Proxyless's snapshot: API listeners named after the
// services, which Envoy and the stand-in, asking for every listener, must
// not get. Every other node gets the main snapshot.
type nodeGroups struct{}

func (nodeGroups) ID(n *core.Node) string {
	if strings.HasPrefix(n.GetUserAgentName(), "gRPC ") {
		return proxylessKey
	}
	return snapshotKey
}

// newCache returns the snapshot cache every node is served from.
//
// It is not in ADS mode (ads=false): in ADS mode go-control-plane answers
// an EDS or RDS request only when it names every resource of that type in
// the snapshot, and a client that subscribes to one cluster's endpoints
// (grpc-go's xDS resolver, a stand-in asking for a subset) would wait
// forever. Responses are filtered to the names requested instead. What
// ADS mode adds, ordering the responses to one SetSnapshot, matters when
// clusters are removed while routes still name them; the translator only
// adds clusters (one per provider) as the policy grows.
func newCache() *parkingCache {
	return &parkingCache{SnapshotCache: cachev3.NewSnapshotCache(false, nodeGroups{}, nil),
		rejected: map[*cachev3.Request]string{}}
}

// parkingCache is the snapshot cache with one change: a NACK of the
// version the cache still holds waits for the next version, where
// go-control-plane answers it at once with the rejected resources again,
// which the client rejects again, in a loop that never ends
// (envoyproxy/go-control-plane#962). The callbacks (nodes) see the NACK
// first and tell the cache, by request, which version it rejected.
type parkingCache struct {
	cachev3.SnapshotCache

	mu       sync.Mutex
	rejected map[*cachev3.Request]string // NACK → the version it rejected
}

// park records that req, a NACK, rejected version.
func (c *parkingCache) park(req *cachev3.Request, version string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.rejected[req] = version
}

// forget drops what park recorded for req (its stream closed first).
func (c *parkingCache) forget(req *cachev3.Request) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.rejected, req)
}

// CreateWatch opens the watch of req as the snapshot cache does, except
// that a NACK watches from the version it rejected: it is answered only
// by a version other than that one.
func (c *parkingCache) CreateWatch(req *cachev3.Request, sub cachev3.Subscription, ch chan cachev3.Response) (func(), error) {
	c.mu.Lock()
	v, ok := c.rejected[req]
	delete(c.rejected, req)
	c.mu.Unlock()
	if ok {
		parked := proto.Clone(req).(*cachev3.Request)
		parked.VersionInfo = v
		req = parked
	}
	return c.SnapshotCache.CreateWatch(req, sub, ch)
}

// registerXDS registers ADS and the separate LDS, RDS, CDS, EDS and RTDS
// services of srv on r. RateLimitConfig resources are served over ADS
// only: the ratelimit module's generated registration takes a concrete
// *grpc.Server, not a registrar.
func registerXDS(r grpc.ServiceRegistrar, srv serverv3.Server) {
	discoverygrpc.RegisterAggregatedDiscoveryServiceServer(r, srv)
	listenerservice.RegisterListenerDiscoveryServiceServer(r, srv)
	routeservice.RegisterRouteDiscoveryServiceServer(r, srv)
	clusterservice.RegisterClusterDiscoveryServiceServer(r, srv)
	endpointservice.RegisterEndpointDiscoveryServiceServer(r, srv)
	runtimeservice.RegisterRuntimeDiscoveryServiceServer(r, srv)
}
