package xdsconfig

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	runtimev3 "github.com/envoyproxy/go-control-plane/envoy/service/runtime/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/leakytokens/leaky/controlplane/model"
	"github.com/leakytokens/leaky/internal/policy"
	"github.com/leakytokens/leaky/internal/xdsconfig/xdstest"
)

// service is a fake of a service's apply path: it records what it
// installs and refuses what refuse says.
type service struct {
	mu      sync.Mutex
	applied []*policy.Snapshot
	refuse  error
	check   func(*policy.Snapshot) error // nil: accept all
}

func (f *service) apply(s *policy.Snapshot) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.refuse != nil {
		return f.refuse
	}
	if f.check != nil {
		if err := f.check(s); err != nil {
			return err
		}
	}
	f.applied = append(f.applied, s)
	return nil
}

func (f *service) snapshots() []*policy.Snapshot {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]*policy.Snapshot(nil), f.applied...)
}

func (f *service) setRefuse(err error) {
	f.mu.Lock()
	f.refuse = err
	f.mu.Unlock()
}

// example is the example policy with the free tier's openai capacity set.
func example(capacity string) map[string]string {
	return map[string]string{"policy.yaml": strings.Replace(string(policy.Example()),
		"openai: {capacity: 4000,", "openai: {capacity: "+capacity+",", 1)}
}

// run starts a subscriber of addr until the test ends.
func run(t *testing.T, addr string, svc *service) (*Subscriber, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	sub, err := New(addr, svc.apply, Options{Node: Node{ID: "test-node", Cluster: "test"}, Registerer: reg,
		MinBackoff: 10 * time.Millisecond, MaxBackoff: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- sub.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run = %v, want nil after cancel", err)
		}
	})
	return sub, reg
}

func capacityOf(t *testing.T, s *policy.Snapshot) int64 {
	t.Helper()
	return s.Policy().Tiers["free"].Buckets["openai"].Capacity
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after 30s waiting for %s", what)
		}
	}
}

func TestAppliesAndACKs(t *testing.T) {
	srv := xdstest.Start(t, "127.0.0.1:0")
	srv.SetFiles(t, "v1", example("4001"))
	svc := &service{}
	sub, reg := run(t, srv.Addr, svc)

	first := srv.WaitRequest(t, "the first request", func(*discoveryv3.DiscoveryRequest) bool { return true })
	if first.GetNode().GetId() != "test-node" || first.GetNode().GetCluster() != "test" || first.GetTypeUrl() != RuntimeType ||
		len(first.GetResourceNames()) != 1 || first.GetResourceNames()[0] != model.RuntimeName || first.GetVersionInfo() != "" {
		t.Errorf("first request = %v, want node test-node/test asking for %s at no version", first, model.RuntimeName)
	}
	srv.WaitRequest(t, "the ACK of v1", xdstest.ACK("v1"))
	if got := svc.snapshots(); len(got) != 1 || capacityOf(t, got[0]) != 4001 || got[0].Source() != "xds "+srv.Addr {
		t.Fatalf("applied %d snapshots, want one with capacity 4001 from xds %s", len(got), srv.Addr)
	}
	if sub.Version() != "v1" {
		t.Errorf("Version = %q, want v1", sub.Version())
	}

	start := time.Now()
	srv.SetFiles(t, "v2", example("4002"))
	eventually(t, "v2 applied", func() bool { s := svc.snapshots(); return len(s) == 2 && capacityOf(t, s[1]) == 4002 })
	t.Logf("a pushed change was applied %v after it was set", time.Since(start))
	srv.WaitRequest(t, "the ACK of v2", xdstest.ACK("v2"))

	// The same files under a new version: ACKed, not applied again.
	srv.SetFiles(t, "v3", example("4002"))
	srv.WaitRequest(t, "the ACK of v3", xdstest.ACK("v3"))
	if n := len(svc.snapshots()); n != 2 {
		t.Errorf("applied %d snapshots after an unchanged one, want 2", n)
	}
	want := map[string]float64{
		`leaky_xds_config_updates_total{result="applied"}`:  3,
		`leaky_xds_config_updates_total{result="rejected"}`: 0,
		`leaky_xds_config_applied_info{version="v3"}`:       1,
		`leaky_xds_config_connected`:                        1,
	}
	if diff := cmp.Diff(want, gather(t, reg)); diff != "" {
		t.Errorf("metrics (-want +got):\n%s", diff)
	}
}

// An invalid configuration is NACKed with the validation error and the
// version last applied; the server's resends of it are paced; a corrected
// one is applied.
func TestRejectsInvalidAndPacesResends(t *testing.T) {
	srv := xdstest.Start(t, "127.0.0.1:0")
	srv.SetFiles(t, "v1", example("4001"))
	svc := &service{}
	sub, reg := run(t, srv.Addr, svc)
	srv.WaitRequest(t, "the ACK of v1", xdstest.ACK("v1"))

	start := time.Now()
	srv.SetFiles(t, "v2", example("-5"))
	nack := srv.WaitRequest(t, "the NACK of v2", xdstest.NACK("capacity"))
	if nack.GetVersionInfo() != "v1" || !strings.Contains(nack.GetErrorDetail().GetMessage(), "policy.yaml") {
		t.Errorf("NACK = %v, want version_info v1 and the error naming policy.yaml", nack)
	}
	// The snapshot cache sends v2 again after every NACK, and the
	// subscriber NACKs each resend after a pause (at least 50 ms, then at
	// least 100 ms): three NACKs take 150 ms or more, never the
	// microseconds of an unpaced loop. A slow machine only adds to it.
	eventually(t, "three NACKs", func() bool {
		n := 0
		for _, r := range srv.Requests() {
			if r.GetErrorDetail() != nil {
				n++
			}
		}
		return n >= 3
	})
	if d := time.Since(start); d < 150*time.Millisecond {
		t.Errorf("three NACKs of one version within %v, want the resends paced (150 ms or more)", d)
	}
	if got := gather(t, reg)[`leaky_xds_config_updates_total{result="rejected"}`]; got != 1 {
		t.Errorf("rejected updates = %v, want 1 (a resend is not counted again)", got)
	}
	if n := len(svc.snapshots()); n != 1 || sub.Version() != "v1" {
		t.Errorf("applied %d snapshots, version %q; want 1 and v1", n, sub.Version())
	}

	srv.SetFiles(t, "v3", example("4003"))
	srv.WaitRequest(t, "the ACK of v3", xdstest.ACK("v3"))
	if s := svc.snapshots(); len(s) != 2 || capacityOf(t, s[1]) != 4003 {
		t.Errorf("applied %d snapshots, want the corrected one second", len(s))
	}
}

// What the service refuses is NACKed with its reason.
func TestRefusedByService(t *testing.T) {
	srv := xdstest.Start(t, "127.0.0.1:0")
	svc := &service{}
	svc.setRefuse(errors.New("the policy file is gone"))
	run(t, srv.Addr, svc)
	srv.SetFiles(t, "v1", example("4001"))
	nack := srv.WaitRequest(t, "the NACK of v1", xdstest.NACK("refused by the service: the policy file is gone"))
	if nack.GetVersionInfo() != "" {
		t.Errorf("NACK version_info = %q, want none applied yet", nack.GetVersionInfo())
	}
	svc.setRefuse(nil)
	srv.SetFiles(t, "v2", example("4002"))
	srv.WaitRequest(t, "the ACK of v2", xdstest.ACK("v2"))
}

// Malformed resources from a real server are NACKed, never a panic, and
// the last good configuration stays.
func TestMalformedResources(t *testing.T) {
	srv := xdstest.Start(t, "127.0.0.1:0")
	srv.SetFiles(t, "v1", example("4001"))
	svc := &service{}
	sub, _ := run(t, srv.Addr, svc)
	srv.WaitRequest(t, "the ACK of v1", xdstest.ACK("v1"))

	layer := func(m map[string]any) *structpb.Struct {
		s, err := structpb.NewStruct(m)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	tests := []struct {
		name string
		res  types.Resource
		want string
	}{
		// A Cluster passed off as the Runtime decodes to one without a
		// layer (its field 2 is an enum, not the layer's message).
		{"a cluster inside", &clusterv3.Cluster{Name: model.RuntimeName, ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS}}, "no layer"},
		{"no files field", &runtimev3.Runtime{Name: model.RuntimeName, Layer: layer(map[string]any{"x": "y"})}, `no field "files"`},
		{"a file that is a number", &runtimev3.Runtime{Name: model.RuntimeName, Layer: layer(map[string]any{
			model.RuntimeFilesField: map[string]any{"policy.yaml": 12.0}})}, `file "policy.yaml": the value is not a string`},
		{"a file that is no yaml", &runtimev3.Runtime{Name: model.RuntimeName, Layer: layer(map[string]any{
			model.RuntimeFilesField: map[string]any{"policy.yaml": "domain: [unclosed"}})}, "policy.yaml: yaml:"},
	}
	for i, tt := range tests {
		version := "bad" + string(rune('a'+i))
		mark := len(srv.Requests())
		srv.SetRuntime(t, version, tt.res)
		nack := srv.WaitRequestAfter(t, mark, "the NACK of "+tt.name, func(r *discoveryv3.DiscoveryRequest) bool {
			return xdstest.NACK(tt.want)(r) && r.GetResponseNonce() != "" && r.GetVersionInfo() == "v1"
		})
		t.Logf("%s: NACK %q", tt.name, nack.GetErrorDetail().GetMessage())
	}
	if n := len(svc.snapshots()); n != 1 || sub.Version() != "v1" {
		t.Errorf("applied %d snapshots, version %q; want 1 and v1", n, sub.Version())
	}
}

// gather reads reg's gauges and counters as name{label="value",…} → value.
func gather(t *testing.T, reg *prometheus.Registry) map[string]float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, f := range families {
		for _, m := range f.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, fmt.Sprintf("%s=%q", l.GetName(), l.GetValue()))
			}
			name := f.GetName()
			if len(labels) > 0 {
				name += "{" + strings.Join(labels, ",") + "}"
			}
			out[name] = m.GetGauge().GetValue() + m.GetCounter().GetValue()
		}
	}
	return out
}

// The server gone: the subscriber keeps what it applied, reconnects with
// backoff, asks the successor (same port) with the version it applied, and
// applies the newer snapshot.
func TestReconnects(t *testing.T) {
	srv := xdstest.Start(t, "127.0.0.1:0")
	srv.SetFiles(t, "v1", example("4001"))
	svc := &service{}
	sub, reg := run(t, srv.Addr, svc)
	srv.WaitRequest(t, "the ACK of v1", xdstest.ACK("v1"))

	srv.Stop()
	eventually(t, "the stream to be seen closed", func() bool {
		return gather(t, reg)["leaky_xds_config_connected"] == 0
	})
	if n := len(svc.snapshots()); n != 1 || sub.Version() != "v1" {
		t.Errorf("while the server is down: applied %d snapshots, version %q; want 1 and v1", n, sub.Version())
	}

	next := xdstest.Start(t, srv.Addr)
	next.SetFiles(t, "v2", example("4002"))
	first := next.WaitRequest(t, "the first request to the new server", func(*discoveryv3.DiscoveryRequest) bool { return true })
	if first.GetVersionInfo() != "v1" || first.GetResponseNonce() != "" {
		t.Errorf("first request after reconnecting: version %q nonce %q, want v1 and none", first.GetVersionInfo(), first.GetResponseNonce())
	}
	next.WaitRequest(t, "the ACK of v2", xdstest.ACK("v2"))
	if s := svc.snapshots(); len(s) != 2 || capacityOf(t, s[1]) != 4002 {
		t.Errorf("applied %d snapshots, want the new server's second", len(s))
	}
}

// A successor serving the version already applied: the subscriber asks
// with that version, and when the server sends it anyway (go-control-plane
// v0.14 does on a new stream that has not been sent the resource yet) it
// is ACKed and not applied again.
func TestReconnectSameVersion(t *testing.T) {
	srv := xdstest.Start(t, "127.0.0.1:0")
	srv.SetFiles(t, "v1", example("4001"))
	svc := &service{}
	run(t, srv.Addr, svc)
	srv.WaitRequest(t, "the ACK of v1", xdstest.ACK("v1"))
	srv.Stop()

	next := xdstest.Start(t, srv.Addr)
	next.SetFiles(t, "v1", example("4001"))
	next.WaitRequest(t, "the first request to the new server", func(r *discoveryv3.DiscoveryRequest) bool {
		return r.GetVersionInfo() == "v1" && r.GetResponseNonce() == ""
	})
	next.SetFiles(t, "v2", example("4002"))
	next.WaitRequest(t, "the ACK of v2", xdstest.ACK("v2"))
	if s := svc.snapshots(); len(s) != 2 || capacityOf(t, s[1]) != 4002 {
		t.Errorf("applied %d snapshots, want 2 (v1 once, then v2)", len(s))
	}
}

func TestNewValidates(t *testing.T) {
	apply := func(*policy.Snapshot) error { return nil }
	node := Options{Node: Node{ID: "n"}}
	tests := []struct {
		name  string
		addr  string
		apply func(*policy.Snapshot) error
		opts  Options
		want  string
	}{
		{"no port", "127.0.0.1", apply, node, "xds address"},
		{"port 0", "127.0.0.1:0", apply, node, "port 1-65535"},
		{"port too big", "127.0.0.1:70000", apply, node, "port 1-65535"},
		{"no host", ":18000", apply, node, "port 1-65535"},
		{"no apply", "127.0.0.1:18000", nil, node, "no apply function"},
		{"no node", "127.0.0.1:18000", apply, Options{}, "node id required"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := New(tt.addr, tt.apply, tt.opts); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("New(%q) = %v, want an error containing %q", tt.addr, err, tt.want)
			}
		})
	}
	reg := prometheus.NewRegistry()
	if _, err := New("localhost:18000", apply, Options{Node: Node{ID: "n"}, Registerer: reg}); err != nil {
		t.Fatalf("New: %v", err)
	}
	if _, err := New("localhost:18000", apply, Options{Node: Node{ID: "n"}, Registerer: reg}); err == nil {
		t.Error("a second subscriber in one registry: no error, want the duplicate metrics refused")
	}
}

func TestBackoff(t *testing.T) {
	lo, hi := 100*time.Millisecond, 5*time.Second
	tests := []struct {
		n        int
		min, max time.Duration
	}{
		{0, 50 * time.Millisecond, 100 * time.Millisecond},
		{1, 100 * time.Millisecond, 200 * time.Millisecond},
		{5, 1600 * time.Millisecond, 3200 * time.Millisecond},
		{6, 2500 * time.Millisecond, 5 * time.Second},
		{1000, 2500 * time.Millisecond, 5 * time.Second},
	}
	for _, tt := range tests {
		for range 100 {
			if d := backoff(lo, hi, tt.n); d < tt.min || d > tt.max {
				t.Fatalf("backoff(%v, %v, %d) = %v, want within [%v, %v]", lo, hi, tt.n, d, tt.min, tt.max)
			}
		}
	}
}

func TestNodeFor(t *testing.T) {
	n := NodeFor("ratelimit")
	if n.Cluster != "ratelimit" || !strings.HasPrefix(n.ID, "ratelimit-") || !strings.HasSuffix(n.ID, "-"+strconv.Itoa(os.Getpid())) {
		t.Errorf("NodeFor(ratelimit) = %+v, want cluster ratelimit and id ratelimit-<host>-<pid>", n)
	}
}

// A response of a type the subscriber did not ask for is not answered
// (an answer would subscribe to that type) and changes nothing.
func TestIgnoresOtherTypes(t *testing.T) {
	svc := &service{}
	sub, err := New("127.0.0.1:18000", svc.apply, Options{Node: Node{ID: "n"}})
	if err != nil {
		t.Fatal(err)
	}
	req, pause := sub.handle(&discoveryv3.DiscoveryResponse{TypeUrl: "type.googleapis.com/envoy.config.cluster.v3.Cluster", VersionInfo: "v1", Nonce: "1"})
	if req != nil || pause != 0 || len(svc.snapshots()) != 0 || sub.Version() != "" {
		t.Errorf("handle(a Cluster response) = %v, %v; applied %d, version %q; want no answer and no change", req, pause, len(svc.snapshots()), sub.Version())
	}
}
