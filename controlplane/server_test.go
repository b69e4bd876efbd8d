package controlplane

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	clusterservice "github.com/envoyproxy/go-control-plane/envoy/service/cluster/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	endpointservice "github.com/envoyproxy/go-control-plane/envoy/service/endpoint/v3"
	listenerservice "github.com/envoyproxy/go-control-plane/envoy/service/listener/v3"
	routeservice "github.com/envoyproxy/go-control-plane/envoy/service/route/v3"
	runtimeservice "github.com/envoyproxy/go-control-plane/envoy/service/runtime/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/leakytokens/leaky/controlplane/model"
	"github.com/leakytokens/leaky/internal/policy"
)

// readyz returns /readyz's status code and body.
func (c *cp) readyz() (int, map[string]any) {
	c.t.Helper()
	code, body := c.call("GET", "/readyz", "", nil)
	var out map[string]any
	if err := json.Unmarshal([]byte(body), &out); err != nil {
		c.t.Fatalf("/readyz = %q: %v", body, err)
	}
	return code, out
}

// A file edit reaches a subscriber as a new Runtime version, and reverting
// it brings back the old version: the version is the content's hash.
func TestFileEditPushesRuntime(t *testing.T) {
	path := writePolicy(t, policy.Example())
	c := startCP(t, testConfig(path, newIssuer(t)), Deps{})
	ads := dialADS(t, c.XDSAddr(), "ratelimit-1")
	first := ads.subscribe(resource.RuntimeType, model.RuntimeName)
	if got := runtimePolicy(t, first).Tiers["free"].Buckets["*"].Capacity; got != 2000 {
		t.Fatalf("first Runtime: free * capacity = %d, want 2000", got)
	}
	if first.GetVersionInfo() != c.Version() {
		t.Errorf("first Runtime version %q, Server.Version() %q: want equal", first.GetVersionInfo(), c.Version())
	}

	start := time.Now()
	editFile(t, path, exampleFreeStar, `"*": {capacity: 3000, leak_rate: 20}`)
	second := ads.ack(ads.recv(), []string{model.RuntimeName})
	t.Logf("file edit to Runtime push: %s", time.Since(start))
	if second.GetVersionInfo() == first.GetVersionInfo() {
		t.Fatalf("version after the edit = %q, want a new one", second.GetVersionInfo())
	}
	if got := runtimePolicy(t, second).Tiers["free"].Buckets["*"].Capacity; got != 3000 {
		t.Errorf("pushed Runtime after the edit: free * capacity = %d, want 3000", got)
	}

	editFile(t, path, `"*": {capacity: 3000, leak_rate: 20}`, exampleFreeStar)
	third := ads.ack(ads.recv(), []string{model.RuntimeName})
	if third.GetVersionInfo() != first.GetVersionInfo() {
		t.Errorf("version after reverting = %q, want the first %q", third.GetVersionInfo(), first.GetVersionInfo())
	}
	if got := c.pushes(); got != 3 {
		t.Errorf("pushes = %v, want 3 (start, edit, revert)", got)
	}
}

// An invalid file pushes nothing; the last snapshot keeps serving, and
// /readyz (200, degraded) and the metrics say why.
func TestInvalidFileKeepsLastSnapshot(t *testing.T) {
	path := writePolicy(t, policy.Example())
	c := startCP(t, testConfig(path, newIssuer(t)), Deps{})
	ads := dialADS(t, c.XDSAddr(), "ratelimit-1")
	first := ads.subscribe(resource.RuntimeType, model.RuntimeName)

	// A bucket GCRA cannot represent: the policy refuses it by name.
	editFile(t, path, exampleFreeStar, `"*": {capacity: 4000000000000, leak_rate: 40}`)
	var body map[string]any
	eventually(t, "/readyz to say degraded", func() bool {
		code, b := c.readyz()
		body = b
		return code == 200 && b["status"] == "degraded"
	})
	reasons, _ := json.Marshal(body["degraded"])
	if !strings.Contains(string(reasons), "policy:") || !strings.Contains(string(reasons), "tiers.free") {
		t.Errorf("/readyz degraded = %s, want the policy problem naming tiers.free", reasons)
	}
	if got := testutil.ToFloat64(c.m.sourceErrors.WithLabelValues("policy")); got != 1 {
		t.Errorf("source_errors_total{source=policy} = %v, want 1", got)
	}
	if got := testutil.ToFloat64(c.m.degraded); got != 1 {
		t.Errorf("degraded gauge = %v, want 1", got)
	}
	if c.Version() != first.GetVersionInfo() || c.pushes() != 1 {
		t.Errorf("after the invalid edit: version %q pushes %v, want %q and 1", c.Version(), c.pushes(), first.GetVersionInfo())
	}

	// A valid edit: the next response is that one, nothing came between.
	editFile(t, path, `"*": {capacity: 4000000000000, leak_rate: 40}`, `"*": {capacity: 5000, leak_rate: 20}`)
	next := ads.ack(ads.recv(), []string{model.RuntimeName})
	if got := runtimePolicy(t, next).Tiers["free"].Buckets["*"].Capacity; got != 5000 {
		t.Errorf("next pushed Runtime: free * capacity = %d, want 5000 (the invalid one must not be pushed)", got)
	}
	eventually(t, "/readyz ok again", func() bool {
		code, b := c.readyz()
		return code == 200 && b["status"] == "ok"
	})
}

// An unchanged model pushes nothing: the same configuration applied again
// is counted as unchanged.
func TestUnchangedModelPushesNothing(t *testing.T) {
	c := startCP(t, testConfig(writePolicy(t, policy.Example()), newIssuer(t)), Deps{})
	before, unchanged := c.pushes(), testutil.ToFloat64(c.m.unchanged)
	same, err := policy.FromContents("again", c.pipeline.state().Config.Files())
	if err != nil {
		t.Fatal(err)
	}
	c.pipeline.setConfig(same)
	c.pipeline.setEndpoints(c.pinned)
	if got := c.pushes(); got != before {
		t.Errorf("pushes after applying the same model twice = %v, want %v", got, before)
	}
	if got := testutil.ToFloat64(c.m.unchanged); got != unchanged+2 {
		t.Errorf("unchanged = %v, want %v", got, unchanged+2)
	}
}

// A node that connects after a push gets the current snapshot at once,
// whatever its id; a node asking for one cluster's endpoints gets them.
func TestLateNodeAndOneClusterEDS(t *testing.T) {
	path := writePolicy(t, policy.Example())
	c := startCP(t, testConfig(path, newIssuer(t)), Deps{})
	editFile(t, path, exampleFreeStar, `"*": {capacity: 2500, leak_rate: 20}`)
	eventually(t, "the edit to be pushed", func() bool { return c.pushes() == 2 })

	late := dialADS(t, c.XDSAddr(), "grpc-client-7")
	r := late.subscribe(resource.RuntimeType, model.RuntimeName)
	if r.GetVersionInfo() != c.Version() || runtimePolicy(t, r).Tiers["free"].Buckets["*"].Capacity != 2500 {
		t.Errorf("late node got version %q, want the current %q with capacity 2500", r.GetVersionInfo(), c.Version())
	}
	openai := model.ProviderService("openai")
	eds := late.subscribe(resource.EndpointType, openai)
	if diff := cmp.Diff(map[string][]string{openai: {"127.0.0.1:8093"}}, assignments(t, eds)); diff != "" {
		t.Errorf("EDS for one cluster (-want +got):\n%s", diff)
	}
}

// Each node's ACKs and NACKs are recorded and shown by the admin API; a
// NACKed version is not sent again, the next version is.
func TestACKAndNACKPerNode(t *testing.T) {
	is := newIssuer(t)
	path := writePolicy(t, policy.Example())
	c := startCP(t, testConfig(path, is), Deps{})
	good := dialADS(t, c.XDSAddr(), "gateway-1")
	v1 := good.subscribe(resource.RuntimeType, model.RuntimeName).GetVersionInfo()

	bad := dialADS(t, c.XDSAddr(), "authz-1")
	bad.send(resource.RuntimeType, []string{model.RuntimeName}, "", "", nil)
	r := bad.recv()
	bad.send(resource.RuntimeType, []string{model.RuntimeName}, "", r.GetNonce(), &status.Status{Code: 3, Message: "tiers.free: refused by the test"})

	var snap snapshotAnswer
	eventually(t, "the NACK to be recorded", func() bool {
		code, body := c.call("GET", "/api/v1/admin/snapshot", is.token(t, []string{"ADMIN"}, nil), nil)
		snap = snapshotAnswer{}
		return code == 200 && json.Unmarshal([]byte(body), &snap) == nil && len(snap.Nodes) == 2 &&
			snap.Nodes[0].Types[resource.RuntimeType] != nil && snap.Nodes[0].Types[resource.RuntimeType].LastNACK != nil
	})
	authz, gateway := snap.Nodes[0], snap.Nodes[1]
	if got := authz.Types[resource.RuntimeType]; authz.ID != "authz-1" || authz.Cluster != "test-authz-1" || got.Sent != v1 || got.ACKed != "" ||
		got.LastNACK.Version != v1 || got.LastNACK.Error != "tiers.free: refused by the test" {
		t.Errorf("authz-1 = %+v %+v, want sent %s, nothing ACKed, NACK of %s with the detail", authz, got, v1, v1)
	}
	if got := gateway.Types[resource.RuntimeType]; gateway.ID != "gateway-1" || !gateway.Connected || got.Sent != v1 || got.ACKed != v1 || got.LastNACK != nil {
		t.Errorf("gateway-1 = %+v %+v, want sent and ACKed %s, no NACK", gateway, got, v1)
	}
	if snap.Version != v1 || !cmp.Equal(snap.Resources[resource.RuntimeType], []string{model.RuntimeName}) {
		t.Errorf("snapshot version %q resources %v, want %q with the Runtime %s", snap.Version, snap.Resources, v1, model.RuntimeName)
	}

	// The rejected version is parked: the next response is the next version.
	editFile(t, path, exampleFreeStar, `"*": {capacity: 2100, leak_rate: 20}`)
	if next := bad.recv(); next.GetVersionInfo() == v1 || next.GetVersionInfo() != c.Version() {
		t.Errorf("after a NACK of %s the node got %s, want the next version (%s now), not the rejected one again", v1, next.GetVersionInfo(), c.Version())
	}
	if got := testutil.ToFloat64(c.m.nacks.WithLabelValues(resource.RuntimeType)); got != 1 {
		t.Errorf("nacks = %v, want 1", got)
	}
}

// A control plane restarted on the same file serves the same version.
func TestRestartSameVersion(t *testing.T) {
	is := newIssuer(t)
	path := writePolicy(t, policy.Example())
	editFile(t, path, exampleFreeStar, `"*": {capacity: 2200, leak_rate: 20}`)
	var versions []string
	for range 2 {
		s, err := New(testConfig(path, is), discard(), Deps{})
		if err != nil {
			t.Fatal(err)
		}
		versions = append(versions, s.Version())
		s.Close()
	}
	if versions[0] == "" || versions[0] != versions[1] {
		t.Errorf("versions of two starts on one file = %q, want equal and set", versions)
	}
}

// A model the translator refuses is not pushed; the translator's error is
// the reason shown.
func TestTranslatorErrorPushesNothing(t *testing.T) {
	ft := &fakeTranslate{}
	path := writePolicy(t, policy.Example())
	c := startCP(t, testConfig(path, newIssuer(t)), Deps{Translate: ft.Translate})
	v := c.Version()
	ft.failWith(errors.New("listener: bad things"))
	editFile(t, path, exampleFreeStar, `"*": {capacity: 2300, leak_rate: 20}`)
	eventually(t, "the refusal", func() bool { return testutil.ToFloat64(c.m.refused.WithLabelValues("translate")) == 1 })
	code, body := c.readyz()
	reasons, _ := json.Marshal(body["degraded"])
	if code != 200 || !strings.Contains(string(reasons), "listener: bad things") || c.Version() != v {
		t.Errorf("/readyz %d %s version %q, want 200 naming the translator's error and version %q", code, reasons, c.Version(), v)
	}
}

// Without a valid model at start (a required service without endpoints)
// nothing is pushed and the control plane is not ready, saying why.
func TestNotReadyWithoutModel(t *testing.T) {
	cfg := testConfig("", newIssuer(t))
	cfg.ConsulAddr = "127.0.0.1:1" // no defaults: only the pinned endpoint
	cfg.Endpoints = map[string][]string{model.ServiceAuthzGRPC: {"127.0.0.1:9091"}}
	c := startCP(t, cfg, Deps{KV: newFakeKV(), Catalog: newFakeCatalog()})
	eventually(t, "/readyz to name the missing services", func() bool {
		code, body := c.readyz()
		reasons, _ := json.Marshal(body["degraded"])
		return code == 503 && strings.Contains(string(reasons), model.ServiceRatelimitGRPC+": no healthy endpoint")
	})
	if c.Version() != "" || c.pushes() != 0 {
		t.Errorf("version %q pushes %v, want nothing pushed", c.Version(), c.pushes())
	}
}

func discard() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// xdsStream is what every separate xDS service's stream offers.
type xdsStream interface {
	Send(*discovery.DiscoveryRequest) error
	Recv() (*discovery.DiscoveryResponse, error)
}

// Beside ADS, the separate LDS, RDS, CDS, EDS and RTDS services serve the
// same snapshot.
func TestSeparateXDSServices(t *testing.T) {
	c := startCP(t, testConfig("", newIssuer(t)), Deps{})
	conn, err := grpc.NewClient(c.XDSAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	openai := model.ProviderService("openai")
	for _, tt := range []struct {
		typ   string
		names []string
		open  func() (xdsStream, error)
	}{
		{resource.ListenerType, nil, func() (xdsStream, error) {
			return listenerservice.NewListenerDiscoveryServiceClient(conn).StreamListeners(ctx)
		}},
		{resource.RouteType, []string{model.RouteName}, func() (xdsStream, error) { return routeservice.NewRouteDiscoveryServiceClient(conn).StreamRoutes(ctx) }},
		{resource.ClusterType, nil, func() (xdsStream, error) {
			return clusterservice.NewClusterDiscoveryServiceClient(conn).StreamClusters(ctx)
		}},
		{resource.EndpointType, []string{openai}, func() (xdsStream, error) {
			return endpointservice.NewEndpointDiscoveryServiceClient(conn).StreamEndpoints(ctx)
		}},
		{resource.RuntimeType, []string{model.RuntimeName}, func() (xdsStream, error) {
			return runtimeservice.NewRuntimeDiscoveryServiceClient(conn).StreamRuntime(ctx)
		}},
	} {
		st, err := tt.open()
		if err != nil {
			t.Fatalf("%s: %v", tt.typ, err)
		}
		if err := st.Send(&discovery.DiscoveryRequest{Node: &core.Node{Id: "plain-xds"}, TypeUrl: tt.typ, ResourceNames: tt.names}); err != nil {
			t.Fatalf("%s: %v", tt.typ, err)
		}
		r, err := st.Recv()
		if err != nil || r.GetVersionInfo() != c.Version() || len(r.GetResources()) == 0 || r.GetTypeUrl() != tt.typ {
			t.Errorf("%s stream: %v, version %q with %d resources; want version %q with resources", tt.typ, err, r.GetVersionInfo(), len(r.GetResources()), c.Version())
		}
	}
}

// Pin, between New and Run, replaces a service's static endpoints (what
// leaky dev does once its services have bound their listeners); a bad
// address is refused and changes nothing.
func TestPinBeforeRun(t *testing.T) {
	s, err := New(testConfig(writePolicy(t, policy.Example()), newIssuer(t)), slog.New(slog.NewTextHandler(io.Discard, nil)), Deps{})
	if err != nil {
		t.Fatal(err)
	}
	openai := model.ProviderService("openai")
	if err := s.Pin(map[string][]string{openai: {"127.0.0.1:notaport"}}); err == nil {
		t.Error("Pin with a bad address: want an error")
	}
	if err := s.Pin(map[string][]string{openai: {"127.0.0.1:18093", "127.0.0.2:18093"}}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run() = %v", err)
		}
	}()
	eds := dialADS(t, s.XDSAddr(), "gateway-1").subscribe(resource.EndpointType, openai)
	if diff := cmp.Diff(map[string][]string{openai: {"127.0.0.1:18093", "127.0.0.2:18093"}}, assignments(t, eds)); diff != "" {
		t.Errorf("EDS after Pin (-want +got):\n%s", diff)
	}
}

// A listener with port 0 holds every push until SetListener names the
// gateway's address (leaky dev binds the gateway after the control plane);
// SetJWKSURL refuses what -authz-jwks-url would.
func TestSetListenerReleasesThePush(t *testing.T) {
	cfg := testConfig(writePolicy(t, policy.Example()), newIssuer(t))
	cfg.Listener = "127.0.0.1:0"
	s, err := New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), Deps{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if v := s.Version(); v != "" {
		t.Fatalf("version %q before the listener is known, want none pushed", v)
	}
	if err := s.SetListener("127.0.0.1:0"); err == nil {
		t.Error("SetListener with port 0: want an error")
	}
	if err := s.SetListener("127.0.0.1:18080"); err != nil {
		t.Fatal(err)
	}
	if s.Version() == "" {
		t.Error("no push after SetListener")
	}
	if err := s.SetJWKSURL("file:///etc/jwks"); err == nil {
		t.Error("SetJWKSURL with a file URL: want an error")
	}
	if err := s.SetJWKSURL("http://127.0.0.1:18081/.well-known/jwks.json"); err != nil {
		t.Error(err)
	}
}

// Envoy's EDS takes IP addresses only: a host name among a service's
// endpoints (a pinned -endpoint, a catalog node address) is resolved
// before the push; one that does not resolve leaves the service on its
// last endpoints, named in /readyz, and the rest of the model pushes.
func TestEndpointHostNamesAreResolved(t *testing.T) {
	c := startCP(t, testConfig(writePolicy(t, policy.Example()), newIssuer(t)), Deps{})
	openai := model.ProviderService("openai")
	if err := c.Pin(map[string][]string{openai: {"localhost:18093"}}); err != nil {
		t.Fatal(err)
	}
	eds := dialADS(t, c.XDSAddr(), "gateway-1").subscribe(resource.EndpointType, openai)
	if got := assignments(t, eds)[openai]; !slices.Equal(got, []string{"127.0.0.1:18093"}) {
		t.Errorf("EDS for an endpoint named localhost = %v, want its IPv4 address alone", got)
	}
	version := c.Version()
	if err := c.Pin(map[string][]string{openai: {"no-such-host.invalid:18093"}}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the unresolvable name in /readyz", func() bool {
		_, reasons := c.degradedReasons()
		return strings.Contains(reasons, "no-such-host.invalid:18093: its host does not resolve")
	})
	if c.Version() != version {
		t.Errorf("version %s after an unresolvable endpoint, want the last %s", c.Version(), version)
	}
}
