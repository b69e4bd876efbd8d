package xdsconfig

import (
	"context"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	rlconfv3 "github.com/envoyproxy/go-control-plane/ratelimit/config/ratelimit/v3"
	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/leakytokens/leaky/internal/policy"
	"github.com/leakytokens/leaky/internal/xdsconfig/xdstest"
	"github.com/leakytokens/leaky/ratelimit/rules"
)

// rulesService is the fake service whose apply also loads the domain
// files, as the ratelimit service does.
func rulesService() *service {
	return &service{check: func(s *policy.Snapshot) error { _, err := rules.NewSet(s.Others()); return err }}
}

// runWith starts a subscriber of addr with opts (node, backoff and
// registry filled in when unset) until the test ends.
func runWith(t *testing.T, addr string, svc *service, opts Options) (*Subscriber, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	if opts.Node.ID == "" {
		opts.Node = Node{ID: "test-node", Cluster: "ratelimit"}
	}
	opts.Registerer, opts.MinBackoff, opts.MaxBackoff = reg, 10*time.Millisecond, 200*time.Millisecond
	sub, err := New(addr, svc.apply, opts)
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

func startFiles(t *testing.T) map[string][]byte {
	t.Helper()
	snap, err := policy.Load("")
	if err != nil {
		t.Fatal(err)
	}
	return snap.Files()
}

func perMinute(name, domain, key string, n uint32) *rlconfv3.RateLimitConfig {
	return &rlconfv3.RateLimitConfig{Name: name, Domain: domain, Descriptors: []*rlconfv3.RateLimitDescriptor{
		{Key: key, RateLimit: &rlconfv3.RateLimitPolicy{Unit: rlconfv3.RateLimitUnit_MINUTE, RequestsPerUnit: n}}}}
}

// others lists a snapshot's domain files by name.
func others(s *policy.Snapshot) []string { return slices.Sorted(maps.Keys(s.Others())) }

// A server that never sends a Runtime, serving node envoy-ratelimit only
// (Envoy Gateway's shape): the RateLimitConfigs are added to the start
// configuration, every response is the whole set (absent = gone, none =
// none), a set the loader refuses is NACKed and the last good one kept.
func TestRateLimitConfigsWithoutRuntime(t *testing.T) {
	srv := xdstest.StartWith(t, "127.0.0.1:0", xdstest.Options{NodeID: "envoy-ratelimit"})
	srv.SetRateLimitConfigs(t, "1", perMinute("foo", "foo", "k", 5))
	svc := rulesService()
	sub, reg := runWith(t, srv.Addr, svc, Options{Node: Node{ID: "envoy-ratelimit", Cluster: "ratelimit"},
		RateLimitConfigs: true, Start: startFiles(t)})

	srv.WaitRequest(t, "the ACK of 1", xdstest.ACK("1"))
	var firsts []string
	for _, r := range srv.Requests() {
		if r.GetResponseNonce() == "" {
			firsts = append(firsts, r.GetTypeUrl()+" "+strings.Join(r.GetResourceNames(), ",")+" "+r.GetNode().GetId())
		}
	}
	want := []string{RuntimeType + " leaky-tokens envoy-ratelimit", RateLimitConfigType + "  envoy-ratelimit"}
	if diff := cmp.Diff(want, firsts); diff != "" {
		t.Errorf("first requests (-want +got):\n%s", diff)
	}
	last := func() *policy.Snapshot { s := svc.snapshots(); return s[len(s)-1] }
	if got := others(last()); !slices.Equal(got, []string{"RateLimitConfig/foo"}) || last().Policy() == nil {
		t.Fatalf("applied domain files %v, policy %v; want RateLimitConfig/foo beside the start policy", got, last().Policy() != nil)
	}
	if sub.RateLimitConfigVersion() != "1" || sub.Version() != "" || sub.Degraded() != nil {
		t.Errorf("versions %q/%q, degraded %v; want RateLimitConfig 1, no Runtime, not degraded", sub.RateLimitConfigVersion(), sub.Version(), sub.Degraded())
	}

	steps := []struct {
		version string
		cfgs    []*rlconfv3.RateLimitConfig
		want    []string
	}{
		{"2", []*rlconfv3.RateLimitConfig{perMinute("foo", "foo", "k", 6), perMinute("bar", "bar", "k", 1)}, []string{"RateLimitConfig/bar", "RateLimitConfig/foo"}},
		{"3", []*rlconfv3.RateLimitConfig{perMinute("bar", "bar", "k", 1)}, []string{"RateLimitConfig/bar"}},
		{"4", nil, []string{}},
	}
	for _, st := range steps {
		srv.SetRateLimitConfigs(t, st.version, st.cfgs...)
		srv.WaitRequest(t, "the ACK of "+st.version, xdstest.ACK(st.version))
		if got := others(last()); !slices.Equal(got, st.want) {
			t.Errorf("version %s: domain files %v, want %v", st.version, got, st.want)
		}
	}

	n := len(svc.snapshots())
	bad := perMinute("baz", "baz", "k", 1)
	bad.Descriptors[0].RateLimit.Unit = rlconfv3.RateLimitUnit_UNKNOWN
	srv.SetRateLimitConfigs(t, "5", perMinute("bar", "bar", "k", 1), bad)
	// The message names the resource and the line of its rule file.
	nack := srv.WaitRequest(t, "the NACK of 5", xdstest.NACK("RateLimitConfig/baz:5: invalid rate limit unit 'UNKNOWN'"))
	if nack.GetVersionInfo() != "4" || nack.GetTypeUrl() != RateLimitConfigType {
		t.Errorf("NACK = %v, want version 4 of %s", nack, RateLimitConfigType)
	}
	if len(svc.snapshots()) != n || sub.RateLimitConfigVersion() != "4" {
		t.Errorf("after the NACK: %d snapshots (want %d), version %q (want 4)", len(svc.snapshots()), n, sub.RateLimitConfigVersion())
	}
	if got := gather(t, reg)[`leaky_xds_ratelimitconfig_applied_info{version="4"}`]; got != 1 {
		t.Errorf("leaky_xds_ratelimitconfig_applied_info{version=4} = %v, want 1", got)
	}
}

// Our control plane sends the Runtime and, for envoyproxy/ratelimit, the
// RateLimitConfig translation of the same domain files: the Runtime's
// file wins, the copy is left out; a domain only a RateLimitConfig has is
// added.
func TestRuntimeShadowsItsRateLimitConfigs(t *testing.T) {
	srv := xdstest.Start(t, "127.0.0.1:0")
	foo := "domain: foo\ndescriptors:\n  - key: k\n    rate_limit: {unit: week, requests_per_unit: 3}\n"
	files := example("4001")
	files["foo.yaml"] = foo
	srv.SetFiles(t, "r1", files)
	srv.SetRateLimitConfigs(t, "c1", perMinute("foo", "foo", "k", 3), perMinute("bar", "bar", "k", 1))
	svc := rulesService()
	sub, _ := runWith(t, srv.Addr, svc, Options{RateLimitConfigs: true, Start: startFiles(t)})
	srv.WaitRequest(t, "the ACK of r1", xdstest.ACK("r1"))
	srv.WaitRequest(t, "the ACK of c1", xdstest.ACK("c1"))
	s := svc.snapshots()
	last := s[len(s)-1]
	if got := others(last); !slices.Equal(got, []string{"RateLimitConfig/bar", "foo.yaml"}) || capacityOf(t, last) != 4001 {
		t.Errorf("domain files %v, want foo.yaml and RateLimitConfig/bar beside the Runtime's policy", got)
	}
	if sub.Version() != "r1" || sub.RateLimitConfigVersion() != "c1" {
		t.Errorf("versions %q/%q, want r1/c1", sub.Version(), sub.RateLimitConfigVersion())
	}
}

// records is a slog handler that keeps every record's message and
// attributes as text.
type records struct {
	mu    sync.Mutex
	lines []string
}

func (r *records) Enabled(context.Context, slog.Level) bool { return true }
func (r *records) WithAttrs([]slog.Attr) slog.Handler       { return r }
func (r *records) WithGroup(string) slog.Handler            { return r }
func (r *records) Handle(_ context.Context, rec slog.Record) error {
	line := rec.Message
	rec.Attrs(func(a slog.Attr) bool { line += " " + a.String(); return true })
	r.mu.Lock()
	r.lines = append(r.lines, line)
	r.mu.Unlock()
	return nil
}

func (r *records) has(text string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.ContainsFunc(r.lines, func(l string) bool { return strings.Contains(l, text) })
}

// Over mutual TLS (Envoy Gateway's xDS server: TLS 1.3, a client
// certificate required): the subscriber with the CA and its certificate
// is served; one without a certificate, or trusting another CA, is
// refused at the handshake and never reaches the server.
func TestMutualTLS(t *testing.T) {
	pki := xdstest.NewPKI(t)
	srv := xdstest.StartWith(t, "127.0.0.1:0", xdstest.Options{TLS: pki.ServerTLS()})
	srv.SetRateLimitConfigs(t, "1", perMinute("foo", "foo", "k", 5))

	refused := []struct {
		name  string
		files TLSFiles
		log   string
	}{
		{"no client certificate", TLSFiles{CA: pki.CAFile}, "certificate"},
		{"another CA", TLSFiles{CA: pki.OtherCAFile, Cert: pki.ClientCertFile, Key: pki.ClientKeyFile}, "certificate"},
	}
	for _, tt := range refused {
		t.Run(tt.name, func(t *testing.T) {
			logs := &records{}
			files := tt.files
			runWith(t, srv.Addr, &service{}, Options{Node: Node{ID: "refused"}, TLS: &files, Logger: slog.New(logs),
				RateLimitConfigs: true, Start: startFiles(t)})
			eventually(t, "the refusal logged", func() bool { return logs.has("xds config stream ended") && logs.has(tt.log) })
			for _, r := range srv.Requests() {
				if r.GetNode().GetId() == "refused" {
					t.Fatalf("the server got a request from a refused client: %v", r)
				}
			}
		})
	}

	svc := &service{}
	runWith(t, srv.Addr, svc, Options{TLS: &TLSFiles{CA: pki.CAFile, Cert: pki.ClientCertFile, Key: pki.ClientKeyFile, ServerName: "localhost"},
		RateLimitConfigs: true, Start: startFiles(t)})
	srv.WaitRequest(t, "the ACK of 1 over mTLS", xdstest.ACK("1"))
	if s := svc.snapshots(); len(s) != 1 || !slices.Equal(others(s[0]), []string{"RateLimitConfig/foo"}) {
		t.Errorf("over mTLS applied %d snapshots, want one with RateLimitConfig/foo", len(s))
	}
}

// Without RateLimitConfigs (authz) only the Runtime is asked for, and a
// RateLimitConfig response is not answered.
func TestRateLimitConfigsOff(t *testing.T) {
	svc := &service{}
	sub, err := New("127.0.0.1:18000", svc.apply, Options{Node: Node{ID: "n"}})
	if err != nil {
		t.Fatal(err)
	}
	if got := len(sub.subscriptions()); got != 1 {
		t.Errorf("%d subscriptions, want the Runtime only", got)
	}
	req, _ := sub.handle(&discoveryv3.DiscoveryResponse{TypeUrl: RateLimitConfigType, VersionInfo: "1", Nonce: "1"})
	if req != nil || len(svc.snapshots()) != 0 {
		t.Errorf("handle(RateLimitConfig) = %v, applied %d; want no answer, nothing applied", req, len(svc.snapshots()))
	}
}
