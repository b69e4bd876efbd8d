package standin

import (
	"io"
	"net/http"
	"strings"
	"testing"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	corsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/cors/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/leakytokens/leaky/controlplane/model"
)

// editHCM changes the listener's HTTP connection manager.
func editHCM(t *testing.T, edit func(*hcmv3.HttpConnectionManager)) func(map[string][]types.Resource) {
	return func(res map[string][]types.Resource) {
		l := res[resourcev3.ListenerType][0].(*listenerv3.Listener)
		f := l.GetFilterChains()[0].GetFilters()[0]
		var hcm hcmv3.HttpConnectionManager
		if err := f.GetTypedConfig().UnmarshalTo(&hcm); err != nil {
			t.Fatal(err)
		}
		edit(&hcm)
		f.ConfigType = &listenerv3.Filter_TypedConfig{TypedConfig: mustAny(t, &hcm)}
	}
}

func TestUnimplementedConfigurationIsNACKedAndTheLastKept(t *testing.T) {
	for _, tc := range []struct {
		name  string
		edit  func(*hcmv3.HttpConnectionManager)
		wants []string // in the NACK's message
	}{
		{
			name:  "unknown field",
			edit:  func(h *hcmv3.HttpConnectionManager) { h.PreserveExternalRequestId = true },
			wants: []string{"listener leaky-gateway", "filter_chains[0].filters[0].typed_config", "field preserve_external_request_id is not implemented by the stand-in"},
		},
		{
			name: "known filter type not implemented",
			edit: func(h *hcmv3.HttpConnectionManager) {
				cors := &hcmv3.HttpFilter{Name: "envoy.filters.http.cors", ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(t, &corsv3.Cors{})}}
				h.HttpFilters = append([]*hcmv3.HttpFilter{cors}, h.HttpFilters...)
			},
			wants: []string{"http_filters[0].typed_config", "extension type envoy.extensions.filters.http.cors.v3.Cors is not implemented"},
		},
		{
			name: "unknown filter type",
			edit: func(h *hcmv3.HttpConnectionManager) {
				odd := &hcmv3.HttpFilter{Name: "odd", ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: &anypb.Any{TypeUrl: "type.googleapis.com/example.Odd"}}}
				h.HttpFilters = append([]*hcmv3.HttpFilter{odd}, h.HttpFilters...)
			},
			wants: []string{"extension type type.googleapis.com/example.Odd is not implemented"},
		},
		{
			name: "a value the stand-in does not implement",
			edit: func(h *hcmv3.HttpConnectionManager) {
				h.PathWithEscapedSlashesAction = hcmv3.HttpConnectionManager_UNESCAPE_AND_FORWARD
			},
			wants: []string{"path_with_escaped_slashes_action UNESCAPE_AND_FORWARD is not implemented"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, _ := providerHarness(t, defaultFixture())
			h.xds.push("v2", h.fix, editHCM(t, tc.edit))
			var nack string
			h.waitFor("a listener NACK", func() bool {
				nacks := h.xds.nacks(resourcev3.ListenerType)
				if len(nacks) == 0 {
					return false
				}
				if v := nacks[0].GetVersionInfo(); v != "v1" {
					t.Errorf("NACK version_info = %q, want the last accepted v1", v)
				}
				nack = nacks[0].GetErrorDetail().GetMessage()
				return true
			})
			for _, w := range tc.wants {
				if !strings.Contains(nack, w) {
					t.Errorf("NACK message %q does not contain %q", nack, w)
				}
			}
			h.waitFor("the other types of v2 applied", func() bool { return h.appliedVersion("route") == "v2" })
			if v := h.appliedVersion("listener"); v != "v1" {
				t.Errorf("applied listener version = %q, want v1 kept", v)
			}
			if resp, _ := h.do("GET", "/openai/v1/models", nil, ""); resp.StatusCode != 200 {
				t.Errorf("status with the last good listener = %d, want 200", resp.StatusCode)
			}
			if m := h.metric(`leaky_gateway_xds_updates_total{result="nack",type="listener"}`); m == "" {
				t.Error("no listener NACK counted in /metrics")
			}
			// A good configuration after the bad one is taken.
			h.pushAndWait("v3", h.fix, nil)
		})
	}
}

// metric is the value of one series in the admin /metrics ("" if absent).
func (h *harness) metric(series string) string {
	resp, err := h.client.Get(h.admin + "/metrics")
	if err != nil {
		h.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			return v
		}
	}
	return ""
}

func TestACKsCarryTheVersionAndNonce(t *testing.T) {
	h, _ := providerHarness(t, defaultFixture())
	h.xds.mu.Lock()
	defer h.xds.mu.Unlock()
	acked := map[string]bool{}
	for _, r := range h.xds.requests {
		if r.GetNode().GetId() != testNode || r.GetNode().GetCluster() != NodeCluster {
			t.Fatalf("request node = %v", r.GetNode())
		}
		if r.GetVersionInfo() == "v1" && r.GetResponseNonce() != "" && r.GetErrorDetail() == nil {
			acked[r.GetTypeUrl()] = true
		}
		if r.GetTypeUrl() == resourcev3.RouteType && !(len(r.GetResourceNames()) == 1 && r.GetResourceNames()[0] == model.RouteName) {
			t.Errorf("RDS asked for %q, want [%s]: %v", r.GetResourceNames(), model.RouteName, r)
		}
		if (r.GetTypeUrl() == resourcev3.ListenerType || r.GetTypeUrl() == resourcev3.ClusterType) && len(r.GetResourceNames()) != 0 {
			t.Errorf("%s asked for %q, want a wildcard", r.GetTypeUrl(), r.GetResourceNames())
		}
	}
	for _, typ := range []string{resourcev3.ListenerType, resourcev3.RouteType, resourcev3.ClusterType, resourcev3.EndpointType} {
		if !acked[typ] {
			t.Errorf("no ACK of v1 for %s", typ)
		}
	}
}

func TestControlPlaneRestartKeepsThenUpdates(t *testing.T) {
	before, after := newRecorder(t), newRecorder(t)
	f := defaultFixture()
	f.endpoints[model.ProviderService("openai")] = []string{before.addr()}
	h := newHarness(t, f)
	h.pushAndWait("v1", h.fix, nil)
	addr := h.xds.addr
	h.xds.stop()
	for i := range 3 {
		if resp, _ := h.do("GET", "/openai/v1/models", nil, ""); resp.StatusCode != 200 {
			t.Fatalf("request %d with the control plane away = %d, want 200", i, resp.StatusCode)
		}
	}
	if len(before.requests()) != 3 {
		t.Fatalf("the upstream got %d requests, want 3", len(before.requests()))
	}
	// A new control plane on the same address, at first without a snapshot.
	h.xds = newXDSServerAt(t, addr)
	h.waitFor("the gateway reconnected", func() bool {
		h.xds.mu.Lock()
		defer h.xds.mu.Unlock()
		return len(h.xds.requests) > 0
	})
	if resp, _ := h.do("GET", "/openai/v1/models", nil, ""); resp.StatusCode != 200 || len(before.requests()) != 4 {
		t.Fatalf("after reconnecting, before any snapshot: %d, upstream requests %d", resp.StatusCode, len(before.requests()))
	}
	g := h.fix
	g.endpoints[model.ProviderService("openai")] = []string{after.addr()}
	h.pushAndWait("v2", g, nil)
	if resp, _ := h.do("GET", "/openai/v1/models", nil, ""); resp.StatusCode != 200 || len(after.requests()) != 1 {
		t.Errorf("after the update: %d, the new endpoint got %d requests", resp.StatusCode, len(after.requests()))
	}
}

func newXDSServerAt(t *testing.T, addr string) *xdsServer {
	s := &xdsServer{t: t, cache: newCache()}
	s.start(addr)
	t.Cleanup(s.stop)
	return s
}

func TestReadyAndConfigDump(t *testing.T) {
	h := newHarness(t, defaultFixture())
	resp, err := h.client.Get(h.admin + "/ready")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("/ready before any configuration = %d, want 503", resp.StatusCode)
	}
	if r, _ := h.do("GET", "/openai/v1/models", nil, ""); r.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("a request before any configuration = %d, want 503", r.StatusCode)
	}
	h.pushAndWait("v1", h.fix, nil)
	resp, err = h.client.Get(h.admin + "/ready")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("/ready after a configuration = %d, want 200", resp.StatusCode)
	}
	resp, err = h.client.Get(h.admin + "/config_dump")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{`"leaky-gateway"`, `"leaky-routes"`, `"leaky-provider-openai"`, `"domain": "leaky-tokens"`, `"versions"`} {
		if !strings.Contains(string(b), want) {
			t.Errorf("/config_dump lacks %s", want)
		}
	}
}
