package controlplane

import (
	"context"
	"testing"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	runtimev3 "github.com/envoyproxy/go-control-plane/envoy/service/runtime/v3"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/leakytokens/leaky/controlplane/model"
	"github.com/leakytokens/leaky/internal/policy"
)

// wait bounds every wait of these tests: generous, for a loaded machine.
const wait = 60 * time.Second

// adsClient is a minimal state-of-the-world ADS client for tests: it
// sends the requests the test spells out and hands over each response.
type adsClient struct {
	t      *testing.T
	node   *core.Node
	stream discovery.AggregatedDiscoveryService_StreamAggregatedResourcesClient
	resps  chan *discovery.DiscoveryResponse
}

// dialADS opens an ADS stream to addr as node id; it is closed when the
// test ends.
func dialADS(t *testing.T, addr, id string) *adsClient {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(func() { cancel(); conn.Close() })
	stream, err := discovery.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	c := &adsClient{t: t, node: &core.Node{Id: id, Cluster: "test-" + id}, stream: stream, resps: make(chan *discovery.DiscoveryResponse, 16)}
	go func() {
		defer close(c.resps)
		for {
			r, err := stream.Recv()
			if err != nil {
				return
			}
			c.resps <- r
		}
	}()
	return c
}

// send sends one request; detail makes it a NACK.
func (c *adsClient) send(typ string, names []string, version, nonce string, detail *status.Status) {
	c.t.Helper()
	err := c.stream.Send(&discovery.DiscoveryRequest{Node: c.node, TypeUrl: typ, ResourceNames: names,
		VersionInfo: version, ResponseNonce: nonce, ErrorDetail: detail})
	if err != nil {
		c.t.Fatalf("send %s: %v", typ, err)
	}
}

// recv returns the next response, failing the test after wait.
func (c *adsClient) recv() *discovery.DiscoveryResponse {
	c.t.Helper()
	select {
	case r, ok := <-c.resps:
		if !ok {
			c.t.Fatal("the ADS stream ended")
		}
		return r
	case <-time.After(wait):
		c.t.Fatalf("no ADS response within %s", wait)
	}
	return nil
}

// ack acknowledges r and returns it.
func (c *adsClient) ack(r *discovery.DiscoveryResponse, names []string) *discovery.DiscoveryResponse {
	c.send(r.GetTypeUrl(), names, r.GetVersionInfo(), r.GetNonce(), nil)
	return r
}

// ackUntil acknowledges responses until one satisfies ok, and returns it.
// Every push carries every type anew (one version for the snapshot), so a
// stream may see responses that change nothing it asked for.
func (c *adsClient) ackUntil(names []string, ok func(*discovery.DiscoveryResponse) bool) *discovery.DiscoveryResponse {
	c.t.Helper()
	for deadline := time.Now().Add(wait); time.Now().Before(deadline); {
		if r := c.ack(c.recv(), names); ok(r) {
			return r
		}
	}
	c.t.Fatalf("no wanted response within %s", wait)
	return nil
}

// subscribe sends the first request of a type and returns its response,
// acknowledged.
func (c *adsClient) subscribe(typ string, names ...string) *discovery.DiscoveryResponse {
	c.t.Helper()
	c.send(typ, names, "", "", nil)
	return c.ack(c.recv(), names)
}

// runtimeFiles reads the files of the Runtime in r.
func runtimeFiles(t *testing.T, r *discovery.DiscoveryResponse) map[string]string {
	t.Helper()
	if len(r.GetResources()) != 1 {
		t.Fatalf("Runtime response has %d resources, want 1", len(r.GetResources()))
	}
	var rt runtimev3.Runtime
	if err := r.GetResources()[0].UnmarshalTo(&rt); err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for name, v := range rt.GetLayer().GetFields()[model.RuntimeFilesField].GetStructValue().GetFields() {
		out[name] = v.GetStringValue()
	}
	return out
}

// runtimePolicy parses the policy a Runtime response carries.
func runtimePolicy(t *testing.T, r *discovery.DiscoveryResponse) *policy.Policy {
	t.Helper()
	files := map[string][]byte{}
	for name, text := range runtimeFiles(t, r) {
		files[name] = []byte(text)
	}
	snap, err := policy.FromContents("xds", files)
	if err != nil {
		t.Fatalf("the pushed Runtime's files: %v", err)
	}
	return snap.Policy()
}

// assignments reads the endpoints of each ClusterLoadAssignment in r, as
// host:port.
func assignments(t *testing.T, r *discovery.DiscoveryResponse) map[string][]string {
	t.Helper()
	out := map[string][]string{}
	for _, a := range r.GetResources() {
		var cla endpointv3.ClusterLoadAssignment
		if err := a.UnmarshalTo(&cla); err != nil {
			t.Fatal(err)
		}
		eps := []string{}
		for _, l := range cla.GetEndpoints() {
			for _, e := range l.GetLbEndpoints() {
				sa := e.GetEndpoint().GetAddress().GetSocketAddress()
				eps = append(eps, model.Endpoint{Host: sa.GetAddress(), Port: sa.GetPortValue()}.String())
			}
		}
		out[cla.GetClusterName()] = eps
	}
	return out
}
