package validate

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
)

func readFile(t *testing.T, name string) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("..", name))
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

// Both committed bootstraps pass.
func TestEnvoyFiles(t *testing.T) {
	for _, name := range []string{"envoy.yaml", "envoy-static.yaml"} {
		if err := Bootstrap([]byte(readFile(t, name))); err != nil {
			t.Errorf("Bootstrap(%s) = %v", name, err)
		}
	}
}

// Each mistake in envoy-static.yaml fails it, with a message naming the
// field or the type.
func TestBootstrapRefuses(t *testing.T) {
	static := readFile(t, "envoy-static.yaml")
	tests := []struct {
		name     string
		old, new string // replaced once in envoy-static.yaml
		want     []string
	}{
		{"misspelt field", "stat_prefix: leaky", "stat_prefx: leaky", []string{`unknown field "stat_prefx"`}},
		{"misspelt field at the root", "static_resources:", "static_resource:", []string{`unknown field "static_resource"`}},
		{"unknown filter type", "envoy.extensions.filters.http.router.v3.Router", "envoy.extensions.filters.http.routr.v3.Router",
			[]string{"type.googleapis.com/envoy.extensions.filters.http.routr.v3.Router"}},
		{"a filter type Envoy has and this package does not know", "envoy.extensions.filters.http.router.v3.Router", "envoy.extensions.filters.http.wasm.v3.Wasm",
			[]string{"type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm"}},
		{"negative cluster timeout", "connect_timeout: 1s", "connect_timeout: -1s", []string{"StaticResources", "ConnectTimeout", "greater than 0s"}},
		{"port out of range", "port_value: 9901", "port_value: 70000", []string{"Admin", "PortValue", "65535"}},
		{"negative timeout inside an Any", "request_headers_timeout: 10s", "request_headers_timeout: -10s",
			[]string{"filter_chains[0].filters[0].typed_config(envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager)", "RequestHeadersTimeout"}},
		{"missing required field inside an Any", "stat_prefix: leaky\n", "\n", []string{"HttpConnectionManager", "StatPrefix"}},
		{"missing required field two Anys deep", "cluster_name: leaky-authz-grpc\n                        timeout", "cluster_name: ''\n                        timeout",
			[]string{"http_filters[0].typed_config(envoy.extensions.filters.http.ext_authz.v3.ExtAuthz)", "ClusterName"}},
		{"a value of the wrong type", "max_request_headers_kb: 64", "max_request_headers_kb: lots", []string{`invalid value for uint32 field value: "lots"`}},
		{"enum misspelt", "path_with_escaped_slashes_action: REJECT_REQUEST", "path_with_escaped_slashes_action: REJECT", []string{"REJECT"}},
		{"second document", "node:\n", "---\nnode:\n", []string{"more than one YAML document"}},
		{"non-string key", "node:\n", "1: x\nnode:\n", []string{"not a string"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if !strings.Contains(static, tt.old) {
				t.Fatalf("envoy-static.yaml has no %q to replace", tt.old)
			}
			err := Bootstrap([]byte(strings.Replace(static, tt.old, tt.new, 1)))
			for _, w := range tt.want {
				if err == nil || !strings.Contains(err.Error(), w) {
					t.Errorf("Bootstrap = %v, want an error with %q", err, w)
				}
			}
		})
	}
	for _, in := range []string{"", "# only a comment\n", "admin: [\n"} {
		if err := Bootstrap([]byte(in)); err == nil {
			t.Errorf("Bootstrap(%q) = nil, want an error", in)
		}
	}
	if err := Bootstrap([]byte(`{"admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 9901}}}}`)); err != nil {
		t.Errorf("Bootstrap(JSON) = %v", err)
	}
}

// Resource checks Go-built messages: their rules and each Any inside.
func TestResource(t *testing.T) {
	router, err := anypb.New(&routerv3.Router{})
	if err != nil {
		t.Fatal(err)
	}
	filter := func(a *anypb.Any) *listenerv3.Listener {
		return &listenerv3.Listener{Name: "l", FilterChains: []*listenerv3.FilterChain{{
			Filters: []*listenerv3.Filter{{Name: "f", ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: a}}},
		}}}
	}
	badCluster, err := anypb.New(&clusterv3.Cluster{Name: "c", ConnectTimeout: durationpb.New(-1)})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		msg  proto.Message
		want string // "" passes
	}{
		{"valid", filter(router), ""},
		{"unknown type URL", filter(&anypb.Any{TypeUrl: "type.googleapis.com/x.y.Nope"}), `filter_chains[0].filters[0].typed_config: unknown type URL "type.googleapis.com/x.y.Nope"`},
		{"a known type this package refuses", filter(badCluster), `unknown type URL "type.googleapis.com/envoy.config.cluster.v3.Cluster"`},
		{"bytes that are not the type", filter(&anypb.Any{TypeUrl: router.GetTypeUrl(), Value: []byte{0xff, 0xff}}), "envoy.extensions.filters.http.router.v3.Router"},
		{"unknown fields inside an Any", filter(&anypb.Any{TypeUrl: router.GetTypeUrl(), Value: []byte{0xf8, 0x3f, 0x01}}), "unknown fields"},
		{"a rule of the root", &clusterv3.Cluster{Name: "c", ConnectTimeout: durationpb.New(-1)}, "ConnectTimeout"},
		{"address port out of range", &corev3.SocketAddress{Address: "a", PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 70000}}, "PortValue"},
		{"Anys without end", nested(t, 40), "more than 32 Anys nested"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := Resource(tt.msg)
			if tt.want == "" {
				if err != nil {
					t.Errorf("Resource = %v, want nil", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Resource = %v, want an error with %q", err, tt.want)
			}
		})
	}
}

// nested is a route whose per-filter config is a FilterConfig holding a
// FilterConfig … depth times.
func nested(t *testing.T, depth int) proto.Message {
	t.Helper()
	inner, err := anypb.New(&routerv3.Router{})
	if err != nil {
		t.Fatal(err)
	}
	for range depth {
		if inner, err = anypb.New(&routev3.FilterConfig{Config: inner}); err != nil {
			t.Fatal(err)
		}
	}
	return &routev3.Route{
		Match:                &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
		Action:               &routev3.Route_DirectResponse{DirectResponse: &routev3.DirectResponseAction{Status: 200}},
		TypedPerFilterConfig: map[string]*anypb.Any{"f": inner},
	}
}
