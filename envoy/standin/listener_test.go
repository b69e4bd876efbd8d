package standin

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/leakytokens/leaky/controlplane/model"
)

// A change of the connection manager's server settings replaces the
// server: the new header bound holds for new connections.
func TestServerSettingsFollowTheListener(t *testing.T) {
	h, _ := providerHarness(t, defaultFixture())
	big := http.Header{"X-Big": {strings.Repeat("a", 4096)}}
	if resp, _ := h.do("GET", "/openai/v1/models", big, ""); resp.StatusCode != 200 {
		t.Fatalf("4 KiB header under a 64 KiB bound = %d, want 200", resp.StatusCode)
	}
	h.pushAndWait("v2", h.fix, editHCM(t, func(m *hcmv3.HttpConnectionManager) { m.MaxRequestHeadersKb = wrapperspb.UInt32(1) }))
	h.client.CloseIdleConnections()
	h.waitFor("a new server with a 1 KiB header bound", func() bool {
		resp, _ := h.do("GET", "/openai/v1/models", big, "")
		h.client.CloseIdleConnections()
		return resp.StatusCode == http.StatusRequestHeaderFieldsTooLarge
	})
	if resp, _ := h.do("GET", "/openai/v1/models", nil, ""); resp.StatusCode != 200 {
		t.Errorf("a small request under the new server = %d, want 200", resp.StatusCode)
	}
	// HTTP/2 only (h2c): a new server that no longer speaks HTTP/1.1.
	h.pushAndWait("v3", h.fix, editHCM(t, func(m *hcmv3.HttpConnectionManager) { m.CodecType = hcmv3.HttpConnectionManager_HTTP2 }))
	h.client.CloseIdleConnections()
	h2c := &http.Client{Timeout: waitBound, Transport: &http.Transport{Protocols: new(http.Protocols)}}
	h2c.Transport.(*http.Transport).Protocols.SetUnencryptedHTTP2(true)
	h.waitFor("an h2c answer", func() bool {
		resp, err := h2c.Get(h.base + "/openai/v1/models")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200 && resp.ProtoMajor == 2
	})
	checks := h.authz.requests()
	if p := checks[len(checks)-1].GetAttributes().GetRequest().GetHttp().GetProtocol(); p != "HTTP/2" {
		t.Errorf("CheckRequest protocol = %q, want HTTP/2", p)
	}
	if resp, err := h.client.Get(h.base + "/openai/v1/models"); err == nil {
		resp.Body.Close()
		if resp.StatusCode == 200 {
			t.Error("an HTTP/1.1 request succeeded on an HTTP2-only listener")
		}
	}
}

func TestMalformedRequestsAre4xx(t *testing.T) {
	h, _ := providerHarness(t, defaultFixture())
	for _, tc := range []struct {
		name, raw string
		want      int
	}{
		{"HTTP/1.0", "GET /openai/v1/models HTTP/1.0\r\nHost: gw\r\n\r\n", http.StatusUpgradeRequired},
		{"fragment", "GET /openai/v1/models#x HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n", http.StatusBadRequest},
		{"control character", "GET /openai/v1/mo%01dels\x7f HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n", http.StatusBadRequest},
		{"no host", "GET /openai/v1/models HTTP/1.1\r\nConnection: close\r\n\r\n", http.StatusBadRequest},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conn, err := net.Dial("tcp", h.gw.Addr())
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			conn.SetDeadline(time.Now().Add(waitBound))
			io.WriteString(conn, tc.raw)
			resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tc.want {
				t.Errorf("status = %d, want %d", resp.StatusCode, tc.want)
			}
		})
	}
}

func TestClusterAndRouteFieldsOutsideTheSubsetAreNACKed(t *testing.T) {
	for _, tc := range []struct {
		name, typeURL, want string
		edit                func(map[string][]types.Resource)
	}{
		{
			name: "cluster health checks", typeURL: resourcev3.ClusterType,
			want: "cluster " + model.ServiceAuthzHTTP + ": (top level): field health_checks is not implemented by the stand-in",
			edit: editCluster(model.ServiceAuthzHTTP, func(c *clusterv3.Cluster) { c.HealthChecks = []*corev3.HealthCheck{{}} }),
		},
		{
			name: "cluster least request", typeURL: resourcev3.ClusterType,
			want: "lb_policy LEAST_REQUEST: only ROUND_ROBIN is implemented by the stand-in",
			edit: editCluster(model.ServiceAuthzHTTP, func(c *clusterv3.Cluster) { c.LbPolicy = clusterv3.Cluster_LEAST_REQUEST }),
		},
		{
			name: "route headers to add", typeURL: resourcev3.RouteType,
			want: "route leaky-routes: virtual_hosts[0].routes[0]: field request_headers_to_add is not implemented by the stand-in",
			edit: func(res map[string][]types.Resource) {
				rc := res[resourcev3.RouteType][0].(*routev3.RouteConfiguration)
				rc.VirtualHosts[0].Routes[0].RequestHeadersToAdd = []*corev3.HeaderValueOption{{Header: &corev3.HeaderValue{Key: "a", Value: "b"}}}
			},
		},
		{
			name: "route-level rate limits", typeURL: resourcev3.RouteType,
			want: "virtual_hosts[0].routes[0].route: field rate_limits is not implemented by the stand-in",
			edit: func(res map[string][]types.Resource) {
				rc := res[resourcev3.RouteType][0].(*routev3.RouteConfiguration)
				rc.VirtualHosts[0].Routes[0].GetRoute().RateLimits = []*routev3.RateLimit{{}}
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, _ := providerHarness(t, defaultFixture())
			h.xds.push("v2", h.fix, tc.edit)
			var msg string
			h.waitFor("a NACK", func() bool {
				for _, r := range h.xds.nacks(tc.typeURL) {
					msg = r.GetErrorDetail().GetMessage()
					return true
				}
				return false
			})
			if !strings.Contains(msg, tc.want) {
				t.Errorf("NACK %q does not contain %q", msg, tc.want)
			}
			if resp, _ := h.do("GET", "/openai/v1/models", nil, ""); resp.StatusCode != 200 {
				t.Errorf("with the last good configuration: %d, want 200", resp.StatusCode)
			}
		})
	}
}
