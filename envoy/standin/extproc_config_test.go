package standin

import (
	"strings"
	"testing"

	mutationrulesv3 "github.com/envoyproxy/go-control-plane/envoy/config/common/mutation_rules/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/types/known/durationpb"
)

// editExtProc changes the listener's ext_proc filter (the third).
func editExtProc(t *testing.T, edit func(*extprocv3.ExternalProcessor)) func(map[string][]types.Resource) {
	return editHCM(t, func(h *hcmv3.HttpConnectionManager) {
		f := h.GetHttpFilters()[2]
		var e extprocv3.ExternalProcessor
		if err := f.GetTypedConfig().UnmarshalTo(&e); err != nil {
			t.Fatal(err)
		}
		edit(&e)
		f.ConfigType = &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(t, &e)}
	})
}

// The ext_proc configuration beyond what the stand-in executes is NACKed,
// naming the field, and the last good configuration keeps serving.
func TestExtProcConfigOutsideTheSubsetIsNACKed(t *testing.T) {
	for _, tc := range []struct {
		name, typeURL, want string
		edit                func(map[string][]types.Resource)
	}{
		{
			name: "request attributes", typeURL: resourcev3.ListenerType,
			want: "http_filters[2].typed_config(envoy.extensions.filters.http.ext_proc.v3.ExternalProcessor): field request_attributes is not implemented by the stand-in",
			edit: editExtProc(t, func(e *extprocv3.ExternalProcessor) { e.RequestAttributes = []string{"request.path"} }),
		},
		{
			name: "mutation rules", typeURL: resourcev3.ListenerType,
			want: "field mutation_rules is not implemented",
			edit: editExtProc(t, func(e *extprocv3.ExternalProcessor) {
				e.MutationRules = &mutationrulesv3.HeaderMutationRules{AllowAllRouting: wrapBool(true)}
			}),
		},
		{
			name: "a buffered response body", typeURL: resourcev3.ListenerType,
			want: "processing_mode.response_body_mode BUFFERED is not implemented by the stand-in",
			edit: editExtProc(t, func(e *extprocv3.ExternalProcessor) {
				e.ProcessingMode.ResponseBodyMode = extprocv3.ProcessingMode_BUFFERED
			}),
		},
		{
			name: "trailers sent", typeURL: resourcev3.ListenerType,
			want: "processing_mode.response_trailer_mode SEND is not implemented",
			edit: editExtProc(t, func(e *extprocv3.ExternalProcessor) {
				e.ProcessingMode.ResponseTrailerMode = extprocv3.ProcessingMode_SEND
			}),
		},
		{
			name: "a gRPC stream timeout", typeURL: resourcev3.ListenerType,
			want: "grpc_service.timeout is not implemented by the stand-in (message_timeout is)",
			edit: editExtProc(t, func(e *extprocv3.ExternalProcessor) { e.GrpcService.Timeout = durationpb.New(1) }),
		},
		{
			name: "a zero message timeout", typeURL: resourcev3.ListenerType,
			want: "message_timeout 0s: must be above 0",
			edit: editExtProc(t, func(e *extprocv3.ExternalProcessor) { e.MessageTimeout = durationpb.New(0) }),
		},
		{
			name: "per-route overrides", typeURL: resourcev3.RouteType,
			want: "field overrides is not implemented by the stand-in",
			edit: func(res map[string][]types.Resource) {
				rc := res[resourcev3.RouteType][0].(*routev3.RouteConfiguration)
				rc.VirtualHosts[0].Routes[0].TypedPerFilterConfig[filterExtProc] = mustAny(t, &extprocv3.ExtProcPerRoute{
					Override: &extprocv3.ExtProcPerRoute_Overrides{Overrides: &extprocv3.ExtProcOverrides{
						GrpcService: &corev3.GrpcService{TargetSpecifier: envoyGRPC("elsewhere")}}},
				})
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, _ := providerHarness(t, meterFixture(true))
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
