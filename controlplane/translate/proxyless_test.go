package translate

import (
	"slices"
	"testing"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/leakytokens/leaky/controlplane/model"
	"github.com/leakytokens/leaky/envoy/validate"
)

// The proxyless snapshot holds, for each gRPC service, an API listener
// named after it whose inline route sends every call to the service's
// cluster, and that cluster with its endpoints; every resource passes
// validation and the snapshot is consistent. (grpc-go's xDS resolver
// reading it through the control plane is controlplane's
// TestGRPCXDSClientFollowsConsul.)
func TestProxylessSnapshot(t *testing.T) {
	m := exampleModel(t)
	snap, err := Proxyless(m)
	if err != nil {
		t.Fatal(err)
	}
	for _, rs := range snap.Resources {
		for _, r := range rs.Items {
			if err := validate.Resource(r.Resource); err != nil {
				t.Errorf("%s: %v", cachev3.GetResourceName(r.Resource), err)
			}
		}
	}
	for _, typ := range []resourcev3.Type{resourcev3.ListenerType, resourcev3.ClusterType, resourcev3.EndpointType} {
		var names []string
		for name := range snap.GetResources(typ) {
			names = append(names, name)
		}
		slices.Sort(names)
		if !slices.Equal(names, ProxylessServices) {
			t.Errorf("%s resources %v, want %v", typ, names, ProxylessServices)
		}
	}
	for _, svc := range ProxylessServices {
		lis := snap.GetResources(resourcev3.ListenerType)[svc].(*listenerv3.Listener)
		var mgr hcmv3.HttpConnectionManager
		if err := lis.GetApiListener().GetApiListener().UnmarshalTo(&mgr); err != nil {
			t.Fatalf("%s: api_listener: %v", svc, err)
		}
		vh := mgr.GetRouteConfig().GetVirtualHosts()
		if len(vh) != 1 || !slices.Equal(vh[0].GetDomains(), []string{svc}) ||
			vh[0].GetRoutes()[0].GetRoute().GetCluster() != svc {
			t.Errorf("%s: route config %v, want one virtual host for %s routing to its cluster", svc, mgr.GetRouteConfig(), svc)
		}
	}
	if again, err := Proxyless(m); err != nil || again.GetVersion(resourcev3.ListenerType) != snap.GetVersion(resourcev3.ListenerType) {
		t.Errorf("the same model translated twice: version %v, %v", again.GetVersion(resourcev3.ListenerType), err)
	}
	m.Endpoints[model.ServiceRatelimitGRPC] = []model.Endpoint{{Host: "10.9.9.9", Port: 9092}}
	if other, _ := Proxyless(m); other.GetVersion(resourcev3.ListenerType) == snap.GetVersion(resourcev3.ListenerType) {
		t.Error("an endpoint change did not change the version")
	}
}
