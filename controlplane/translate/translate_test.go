package translate

import (
	"errors"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	rlconfv3 "github.com/envoyproxy/go-control-plane/ratelimit/config/ratelimit/v3"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/leakytokens/leaky/controlplane/model"
	"github.com/leakytokens/leaky/envoy/validate"
	"github.com/leakytokens/leaky/internal/policy"
)

// TestClientHeaderRegex runs the removal regex as Envoy does (RE2, whole
// name) against header names, as sent and folded to lower case as Envoy's
// codecs fold them.
func TestClientHeaderRegex(t *testing.T) {
	re := regexp.MustCompile(`^(?:` + ClientHeaderRegex + `)$`)
	tests := []struct {
		name    string
		removed bool
	}{
		{"x-leaky-user-id", true},
		{"x-leaky-org-id", true},
		{"x-leaky-tier", true},
		{"x-leaky-provider", true},
		{"x-leaky-estimate", true},
		{"x-leaky-roles", true},
		{"X_LEAKY_TIER", true},
		{"X-Leaky-User-Id", true},
		{"x_leaky-estimate", true},
		{"x-leaky_estimate", true},
		{"x_leaky_user_id", true},
		{"x-leaky-", true},
		{"x_leaky_", true},
		{"x-leaky-org", false},
		{"X-Leaky-Org", false},
		{"x_leaky_org", true},
		{"x-leaky_org", true},
		{"x_leaky-org", true},
		{"x-leaky-organisation", true},
		{"x-leaky-org-", true},
		{"x-leaky-orgs", true},
		{"x-leaky-or", true},
		{"x-leaky-o", true},
		{"x-leaky-ox", true},
		{"x-leaky-oRx", true},
		{"x-leaky-x", true},
		{"x-leakyfoo", false},
		{"x-leaky", false},
		{"x-leak-user-id", false},
		{"xx-leaky-user-id", false},
		{"a-x-leaky-user-id", false},
		{"x--leaky-user-id", false},
		{"authorization", false},
		{"x-api-key", false},
		{"x-request-id", false},
		{":path", false},
	}
	for _, tt := range tests {
		for _, name := range []string{tt.name, strings.ToLower(tt.name)} {
			if got := re.MatchString(name); got != tt.removed {
				t.Errorf("ClientHeaderRegex matches %q = %v, want %v", name, got, tt.removed)
			}
		}
	}
}

// An unchanged model gives the same version; every change gives a new one.
func TestVersion(t *testing.T) {
	base := snapshotVersion(t, exampleModel(t))
	if again := snapshotVersion(t, exampleModel(t)); again != base {
		t.Errorf("the same model translated twice: versions %q and %q", base, again)
	}
	shuffled := exampleModel(t)
	shuffled.Endpoints[model.ServiceAuthzGRPC] = []model.Endpoint{ep(t, "127.0.0.3:9091"), ep(t, "127.0.0.1:9091"), ep(t, "127.0.0.3:9091")}
	sorted := exampleModel(t)
	sorted.Endpoints[model.ServiceAuthzGRPC] = []model.Endpoint{ep(t, "127.0.0.1:9091"), ep(t, "127.0.0.3:9091")}
	if a, b := snapshotVersion(t, shuffled), snapshotVersion(t, sorted); a != b {
		t.Errorf("the same endpoints in another order, one repeated: versions %q and %q", a, b)
	}
	seen := map[string]string{base: "the example"}
	for name, change := range modelChanges(t) {
		m := exampleModel(t)
		change(m)
		m.Normalize()
		v := snapshotVersion(t, m)
		if other, dup := seen[v]; dup {
			t.Errorf("%s: version %q, the same as %s's", name, v, other)
		}
		seen[v] = name
	}
}

// snapshotVersion translates m, validates every resource and returns the
// snapshot's version, checking that every type has it.
func snapshotVersion(t *testing.T, m *model.Model) string {
	t.Helper()
	snap, err := Translate(m)
	if err != nil {
		t.Fatal(err)
	}
	for typ, byName := range snap.Resources {
		for name, r := range byName.Items {
			if err := validate.Resource(r.Resource); err != nil {
				t.Errorf("validate.Resource(%d %s) = %v", typ, name, err)
			}
		}
	}
	v := snap.GetVersion(resourcev3.ListenerType)
	for _, typ := range []string{resourcev3.RouteType, resourcev3.ClusterType, resourcev3.EndpointType, resourcev3.RuntimeType, resourcev3.RateLimitConfigType} {
		if got := snap.GetVersion(typ); got != v {
			t.Fatalf("version of %s = %q, want the snapshot's %q", typ, got, v)
		}
	}
	return v
}

// modelChanges are changes to the example model, each of which must give
// a new version.
func modelChanges(t *testing.T) map[string]func(*model.Model) {
	withFiles := func(edit func(map[string][]byte)) func(*model.Model) {
		return func(m *model.Model) {
			files := m.Config.Files()
			edit(files)
			cfg, err := policy.FromContents("test", files)
			if err != nil {
				t.Fatal(err)
			}
			m.Config = cfg
		}
	}
	withPolicy := func(old, new string) func(*model.Model) {
		return withFiles(func(files map[string][]byte) {
			name, data := policy.ExampleSource, string(files[policy.ExampleSource])
			if !strings.Contains(data, old) {
				t.Fatalf("the example policy has no %q", old)
			}
			files[name] = []byte(strings.Replace(data, old, new, 1))
		})
	}
	return map[string]func(*model.Model){
		"an endpoint added": func(m *model.Model) {
			m.Endpoints[model.ServiceAuthzGRPC] = append(m.Endpoints[model.ServiceAuthzGRPC], ep(t, "127.0.0.2:9091"))
		},
		"a port changed":        func(m *model.Model) { m.Endpoints[model.ProviderService("qwen")][0].Port = 9999 },
		"analytics gone":        func(m *model.Model) { delete(m.Endpoints, model.ServiceAnalyticsHTTP) },
		"the listener moved":    func(m *model.Model) { m.Listener.Port = 8081 },
		"retries":               withPolicy("retries: 2", "retries: 3"),
		"a tier's bucket":       withPolicy("capacity: 4000,", "capacity: 4001,"),
		"a comment of the file": withPolicy("# Users whose roles", "# All users whose roles"),
		"authz failure mode":    withPolicy("authz_failure_mode: deny", "authz_failure_mode: allow"),
		"a provider path":       withPolicy("qwen: /compatible-mode/", "qwen: /compatible/"),
		"a provider removed":    withPolicy("  gemini: {capacity: 1000000, leak_rate: 20000}\n", ""),
		"a ratelimit domain file": withFiles(func(files map[string][]byte) {
			files["other.yaml"] = []byte("domain: other\ndescriptors: [{key: k, rate_limit: {unit: second, requests_per_unit: 1}}]\n")
		}),
	}
}

// A model that fails Validate is refused by Translate and Static alike.
func TestRefusesInvalidModel(t *testing.T) {
	tests := []struct {
		name   string
		edit   func(*model.Model) *model.Model
		want   string
		wantIs error
	}{
		{"no model", func(*model.Model) *model.Model { return nil }, "no model", nil},
		{"no policy", func(m *model.Model) *model.Model { m.Config = nil; return m }, "no leaky-tokens policy", nil},
		{"authz without endpoints", func(m *model.Model) *model.Model { delete(m.Endpoints, model.ServiceAuthzGRPC); return m },
			"service leaky-authz-grpc", model.ErrNoEndpoints},
		{"a provider without endpoints", func(m *model.Model) *model.Model { delete(m.Endpoints, model.ProviderService("qwen")); return m },
			"service leaky-provider-qwen", model.ErrNoEndpoints},
		{"an endpoint without port", func(m *model.Model) *model.Model {
			m.Endpoints[model.ServiceAnalyticsHTTP] = []model.Endpoint{{Host: "127.0.0.1"}}
			return m
		}, "want host:port", nil},
		{"no listener port", func(m *model.Model) *model.Model { m.Listener.Port = 0; return m }, "listener has no port", nil},
		{"a listener on a host name", func(m *model.Model) *model.Model { m.Listener.Host = "localhost"; return m },
			"listener localhost:8080: want an IP address", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := tt.edit(exampleModel(t))
			if snap, err := Translate(m); err == nil || !strings.Contains(err.Error(), tt.want) || (tt.wantIs != nil && !errors.Is(err, tt.wantIs)) {
				t.Errorf("Translate = %v, %v; want an error with %q", snap, err, tt.want)
			}
			if b, err := Static(m); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Static = %v, %v; want an error with %q", b, err, tt.want)
			}
		})
	}
}

// Static holds the resources Translate gives, but for where the routes
// and endpoints come from.
func TestStaticMatchesTranslate(t *testing.T) {
	for name, build := range map[string]func(*testing.T) *model.Model{"example": exampleModel, "org-extra-allow": orgModel} {
		t.Run(name, func(t *testing.T) {
			m := build(t)
			res, err := Resources(m)
			if err != nil {
				t.Fatal(err)
			}
			static, err := Static(m)
			if err != nil {
				t.Fatal(err)
			}
			lis := proto.Clone(static.GetStaticResources().GetListeners()[0]).(*listenerv3.Listener)
			mgr := connectionManagerOf(t, lis)
			if diff := cmp.Diff(res[resourcev3.RouteType][0], mgr.GetRouteConfig(), protocmp.Transform()); diff != "" {
				t.Errorf("inline routes (-translate +static):\n%s", diff)
			}
			rdsRoutes()(mgr)
			packed, err := typed("hcm", mgr)
			if err != nil {
				t.Fatal(err)
			}
			lis.GetFilterChains()[0].GetFilters()[0].ConfigType = &listenerv3.Filter_TypedConfig{TypedConfig: packed}
			if diff := cmp.Diff(res[resourcev3.ListenerType][0], lis, protocmp.Transform()); diff != "" {
				t.Errorf("listener but for its routes (-translate +static):\n%s", diff)
			}
			clusters := static.GetStaticResources().GetClusters()
			if len(clusters) != len(res[resourcev3.ClusterType]) {
				t.Fatalf("static has %d clusters, translate %d", len(clusters), len(res[resourcev3.ClusterType]))
			}
			for i, c := range clusters {
				c = proto.Clone(c).(*clusterv3.Cluster)
				if diff := cmp.Diff(res[resourcev3.EndpointType][i], c.GetLoadAssignment(), protocmp.Transform()); diff != "" {
					t.Errorf("cluster %s: inline endpoints (-translate +static):\n%s", c.GetName(), diff)
				}
				c.LoadAssignment = nil
				edsDiscovery(c.GetName())(c)
				if diff := cmp.Diff(res[resourcev3.ClusterType][i], c, protocmp.Transform()); diff != "" {
					t.Errorf("cluster %s but for its endpoints (-translate +static):\n%s", c.GetName(), diff)
				}
			}
		})
	}
}

func connectionManagerOf(t *testing.T, lis *listenerv3.Listener) *hcmv3.HttpConnectionManager {
	t.Helper()
	mgr := &hcmv3.HttpConnectionManager{}
	if err := lis.GetFilterChains()[0].GetFilters()[0].GetTypedConfig().UnmarshalTo(mgr); err != nil {
		t.Fatal(err)
	}
	return mgr
}

// A static cluster is STATIC when its hosts are IP addresses, STRICT_DNS
// (resolved by Envoy) when one is a name; Translate refuses the name, as
// Envoy's EDS would.
func TestStaticClusterKinds(t *testing.T) {
	m := orgModel(t)
	m.Endpoints[model.ProviderService("local-llm")] = []model.Endpoint{ep(t, "llm.internal:11434")}
	if _, err := Translate(m); err == nil || !strings.Contains(err.Error(), "service leaky-provider-local-llm: endpoint llm.internal:11434: want an IP address") {
		t.Errorf("Translate with a host name endpoint = %v, want a refusal naming it", err)
	}
	static, err := Static(m)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range static.GetStaticResources().GetClusters() {
		want := clusterv3.Cluster_STATIC
		if c.GetName() == model.ProviderService("local-llm") {
			want = clusterv3.Cluster_STRICT_DNS
		}
		if c.GetType() != want {
			t.Errorf("cluster %s: type %v, want %v", c.GetName(), c.GetType(), want)
		}
	}
}

// The facts of Envoy's API the configuration relies on, asserted beside the
// golden files so that -update cannot silently lose them.
func TestSpecFacts(t *testing.T) {
	res, err := Resources(exampleModel(t))
	if err != nil {
		t.Fatal(err)
	}
	mgr := connectionManagerOf(t, res[resourcev3.ListenerType][0].(*listenerv3.Listener))
	var filters []string
	for _, f := range mgr.GetHttpFilters() {
		filters = append(filters, f.GetName())
	}
	if diff := cmp.Diff([]string{"envoy.filters.http.ext_authz", "envoy.filters.http.ratelimit", "envoy.filters.http.ext_proc", "envoy.filters.http.router"}, filters); diff != "" {
		t.Errorf("http filters (-want +got):\n%s", diff)
	}
	// Every request from outside gets a fresh x-request-id: an edge request
	// (use_remote_address) with generated ids and no preserved client id.
	if !mgr.GetUseRemoteAddress().GetValue() || !mgr.GetGenerateRequestId().GetValue() || mgr.GetPreserveExternalRequestId() {
		t.Errorf("use_remote_address %v, generate_request_id %v, preserve_external_request_id %v; want true, true, false",
			mgr.GetUseRemoteAddress(), mgr.GetGenerateRequestId(), mgr.GetPreserveExternalRequestId())
	}
	if ext := mgr.GetEarlyHeaderMutationExtensions(); len(ext) != 1 || ext[0].GetName() != EarlyHeaderMutation {
		t.Errorf("early header mutation extensions = %v, want the header_mutation one", ext)
	}
	rc := res[resourcev3.RouteType][0].(*routev3.RouteConfiguration)
	var limited int
	for _, r := range rc.GetVirtualHosts()[0].GetRoutes() {
		if len(r.GetRoute().GetRateLimits()) > 0 {
			t.Errorf("route %s has route-level rate_limits; hits_addend works only in RateLimitPerRoute", r.GetMatch().GetPrefix())
		}
		_, isLimited := r.GetTypedPerFilterConfig()["envoy.filters.http.ratelimit"]
		if isLimited {
			limited++
		}
		// Metered exactly where limited: ext_proc is off on every other
		// route.
		off := &extprocv3.ExtProcPerRoute{}
		cfg, hasExtProc := r.GetTypedPerFilterConfig()["envoy.filters.http.ext_proc"]
		if hasExtProc {
			if err := cfg.UnmarshalTo(off); err != nil {
				t.Fatal(err)
			}
		}
		if metered := !off.GetDisabled(); metered != isLimited || hasExtProc == isLimited {
			t.Errorf("route %s: rate-limited %v, ext_proc per-route config %v; want ext_proc disabled exactly on the routes without rate limits",
				r.GetMatch().GetPrefix(), isLimited, off)
		}
	}
	if limited != 6 {
		t.Errorf("%d routes with RateLimitPerRoute, want 6 (two per provider)", limited)
	}
	limits := rateLimits()
	for _, rl := range limits {
		if rl.GetHitsAddend().GetFormat() != "%REQ(x-leaky-estimate)%" {
			t.Errorf("hits_addend = %v, want the estimate header's format", rl.GetHitsAddend())
		}
	}
	// The request id is a descriptor of its own, the last one.
	last := limits[len(limits)-1].GetActions()
	if len(last) != 1 || last[0].GetRequestHeaders().GetHeaderName() != "x-request-id" || last[0].GetRequestHeaders().GetDescriptorKey() != "request_id" {
		t.Errorf("last rate limit's actions = %v, want exactly (request_id, x-request-id)", last)
	}
	var meter extprocv3.ExternalProcessor
	if err := mgr.GetHttpFilters()[2].GetTypedConfig().UnmarshalTo(&meter); err != nil {
		t.Fatal(err)
	}
	wantMode := &extprocv3.ProcessingMode{
		RequestHeaderMode: extprocv3.ProcessingMode_SEND, RequestBodyMode: extprocv3.ProcessingMode_BUFFERED,
		ResponseHeaderMode: extprocv3.ProcessingMode_SEND, ResponseBodyMode: extprocv3.ProcessingMode_STREAMED,
		RequestTrailerMode: extprocv3.ProcessingMode_SKIP, ResponseTrailerMode: extprocv3.ProcessingMode_SKIP,
	}
	if diff := cmp.Diff(wantMode, meter.GetProcessingMode(), protocmp.Transform()); diff != "" {
		t.Errorf("ext_proc processing_mode (-want +got):\n%s", diff)
	}
	if c := meter.GetGrpcService().GetEnvoyGrpc().GetClusterName(); c != "leaky-ratelimit-grpc" || !meter.GetFailureModeAllow() ||
		meter.GetMessageTimeout().AsDuration() != time.Second {
		t.Errorf("ext_proc cluster %q, failure_mode_allow %v, message_timeout %v; want leaky-ratelimit-grpc, true (the default), 1s (the default)",
			c, meter.GetFailureModeAllow(), meter.GetMessageTimeout().AsDuration())
	}
}

func TestBootstrapErrors(t *testing.T) {
	xds, admin := ep(t, "127.0.0.1:18000"), DefaultAdmin()
	tests := []struct {
		name          string
		node, cluster string
		xds, admin    model.Endpoint
		want          string
	}{
		{"admin on every address", EnvoyNode, NodeCluster, xds, ep(t, "0.0.0.0:9901"), "admin address 0.0.0.0:9901"},
		{"admin on a public address", EnvoyNode, NodeCluster, xds, ep(t, "10.0.0.1:9901"), "want a loopback IP address"},
		{"admin by name", EnvoyNode, NodeCluster, xds, ep(t, "localhost:9901"), "admin address localhost:9901"},
		{"admin without port", EnvoyNode, NodeCluster, xds, model.Endpoint{Host: "127.0.0.1"}, "admin address"},
		{"no node", "", NodeCluster, xds, admin, "empty node id"},
		{"no cluster", EnvoyNode, "", xds, admin, "empty node cluster"},
		{"no control plane", EnvoyNode, NodeCluster, model.Endpoint{}, admin, "control plane address"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if b, err := Bootstrap(tt.node, tt.cluster, tt.xds, tt.admin); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Bootstrap = %v, %v; want an error with %q", b, err, tt.want)
			}
		})
	}
	if _, err := Bootstrap(EnvoyNode, NodeCluster, ep(t, "[::1]:18000"), ep(t, "[::1]:9901")); err != nil {
		t.Errorf("Bootstrap on IPv6 loopback = %v", err)
	}
}

// A domain file that is not valid refuses the translation, naming the file
// and the field; a valid one that RateLimitConfig cannot express is left
// out of the RateLimitConfig resources (the Runtime still carries it) and
// named by RateLimitConfigGaps.
func TestRateLimitConfigErrors(t *testing.T) {
	refused := []struct{ name, file, want string }{
		{"unknown unit", "domain: d\ndescriptors: [{key: k, rate_limit: {unit: fortnight, requests_per_unit: 1}}]\n", `d.yaml: descriptors[0].rate_limit.unit "fortnight": not a unit`},
		{"unknown key", "domain: d\ndescriptors: [{key: k, colour: blue}]\n", "colour"},
		{"negative requests", "domain: d\ndescriptors: [{key: k, rate_limit: {unit: second, requests_per_unit: -1}}]\n", "cannot unmarshal"},
		{"metadata not a mapping", "domain: d\ndescriptors: [{key: k, metadata: [a]}]\n", "descriptors[0].metadata: d.yaml:2: error parsing metadata"},
	}
	for _, tt := range refused {
		t.Run(tt.name, func(t *testing.T) {
			m := withFiles(t, map[string]string{"d.yaml": tt.file})
			if snap, err := Translate(m); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Translate = %v, %v; want an error with %q", snap, err, tt.want)
			}
		})
	}
	left := []struct{ name, file, want string }{
		{"share threshold", "domain: d\ndescriptors: [{key: k, value: a*, share_threshold: true}]\n", "descriptors[0].share_threshold"},
		{"value to metric", "domain: d\ndescriptors: [{key: k, value_to_metric: true}]\n", "descriptors[0].value_to_metric"},
	}
	for _, tt := range left {
		t.Run(tt.name, func(t *testing.T) {
			m := withFiles(t, map[string]string{"d.yaml": tt.file, "e.yaml": "domain: e\ndescriptors: [{key: k, rate_limit: {unit: day, requests_per_unit: 1}}]\n"})
			snap, err := Translate(m)
			if err != nil {
				t.Fatalf("Translate = %v; want the file left out of RateLimitConfig, not a refusal", err)
			}
			var domains []string
			for name := range snap.GetResources(resourcev3.RateLimitConfigType) {
				domains = append(domains, name)
			}
			if !slices.Equal(domains, []string{"e"}) {
				t.Errorf("RateLimitConfig resources %v, want [e]", domains)
			}
			gaps := RateLimitConfigGaps(m)
			if len(gaps) != 1 || !strings.Contains(gaps[0].Error(), tt.want) {
				t.Errorf("RateLimitConfigGaps = %v, want one naming %q", gaps, tt.want)
			}
		})
	}
	m := withFiles(t, map[string]string{"a.yaml": "domain: d\n", "b.yaml": "domain: d\n"})
	if _, err := Translate(m); err == nil || !strings.Contains(err.Error(), `domain "d" is also in another file`) {
		t.Errorf("Translate with domain d twice = %v, want a refusal", err)
	}
}

// withFiles is the example model with more domain files beside the policy.
func withFiles(t *testing.T, files map[string]string) *model.Model {
	t.Helper()
	m := exampleModel(t)
	all := m.Config.Files()
	for name, data := range files {
		all[name] = []byte(data)
	}
	cfg, err := policy.FromContents("test", all)
	if err != nil {
		t.Fatal(err)
	}
	m.Config = cfg
	return m
}

// The fields the bumped RateLimitConfig carries translate: quota_mode,
// metadata (nested, as the rule loader reads it), the units week, month and
// year; an Envoy Gateway dump's root name is accepted and not carried.
func TestRateLimitConfigCarriesQuotaModeMetadataUnits(t *testing.T) {
	file := `name: first-listener
domain: d
descriptors:
  - key: k
    value: v
    quota_mode: true
    metadata: {name: svc1, nested: {n: 2, on: true}}
    rate_limit: {unit: week, requests_per_unit: 3}
  - key: m
    rate_limit: {unit: month, requests_per_unit: 4}
  - key: y
    rate_limit: {unit: year, requests_per_unit: 5}
`
	snap, err := Translate(withFiles(t, map[string]string{"d.yaml": file}))
	if err != nil {
		t.Fatal(err)
	}
	res, ok := snap.GetResources(resourcev3.RateLimitConfigType)["d"].(*rlconfv3.RateLimitConfig)
	if !ok {
		t.Fatalf("no RateLimitConfig d in %v", snap.GetResources(resourcev3.RateLimitConfigType))
	}
	meta, err := structpb.NewStruct(map[string]any{"name": "svc1", "nested": map[string]any{"n": 2, "on": true}})
	if err != nil {
		t.Fatal(err)
	}
	want := &rlconfv3.RateLimitConfig{Name: "d", Domain: "d", Descriptors: []*rlconfv3.RateLimitDescriptor{
		{Key: "k", Value: "v", QuotaMode: true, Metadata: meta,
			RateLimit: &rlconfv3.RateLimitPolicy{Unit: rlconfv3.RateLimitUnit_WEEK, RequestsPerUnit: 3}, Descriptors: []*rlconfv3.RateLimitDescriptor{}},
		{Key: "m", RateLimit: &rlconfv3.RateLimitPolicy{Unit: rlconfv3.RateLimitUnit_MONTH, RequestsPerUnit: 4}, Descriptors: []*rlconfv3.RateLimitDescriptor{}},
		{Key: "y", RateLimit: &rlconfv3.RateLimitPolicy{Unit: rlconfv3.RateLimitUnit_YEAR, RequestsPerUnit: 5}, Descriptors: []*rlconfv3.RateLimitDescriptor{}},
	}}
	if diff := cmp.Diff(want, res, protocmp.Transform()); diff != "" {
		t.Errorf("RateLimitConfig (-want +got):\n%s", diff)
	}
}
