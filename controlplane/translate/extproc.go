package translate

import (
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/leakytokens/leaky/controlplane/model"
	"github.com/leakytokens/leaky/internal/policy"
)

// ExtProcFilter is the name of the metering filter (Envoy's ext_proc),
// which is also the key of its per-route configuration.
const ExtProcFilter = "envoy.filters.http.ext_proc"

// extProcFilter is the metering filter (the shared spec, wire agreement 3):
// a stream per request to the ratelimit service's ExternalProcessor that
// sees the request headers and the whole request body, then the response
// headers and each response body chunk as it passes; trailers are skipped.
// message_timeout bounds each answer; failure_mode_allow says whether a
// failed or silent processor lets the request carry on unmetered.
func extProcFilter(g policy.Gateway) (*hcmv3.HttpFilter, error) {
	cfg, err := typed("ext_proc filter", &extprocv3.ExternalProcessor{
		GrpcService:      &corev3.GrpcService{TargetSpecifier: envoyGRPC(model.ServiceRatelimitGRPC)},
		FailureModeAllow: g.MeteringFailureMode == policy.FailAllow,
		MessageTimeout:   durationpb.New(time.Duration(g.MeteringTimeout)),
		ProcessingMode: &extprocv3.ProcessingMode{
			RequestHeaderMode:   extprocv3.ProcessingMode_SEND,
			RequestBodyMode:     extprocv3.ProcessingMode_BUFFERED,
			ResponseHeaderMode:  extprocv3.ProcessingMode_SEND,
			ResponseBodyMode:    extprocv3.ProcessingMode_STREAMED,
			RequestTrailerMode:  extprocv3.ProcessingMode_SKIP,
			ResponseTrailerMode: extprocv3.ProcessingMode_SKIP,
		},
	})
	if err != nil {
		return nil, err
	}
	return &hcmv3.HttpFilter{Name: ExtProcFilter, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: cfg}}, nil
}

// noExtProc is the per-route configuration that turns the metering filter
// off, for every route that is not a provider's.
func noExtProc() (*anypb.Any, error) {
	return typed("ext_proc per-route config", &extprocv3.ExtProcPerRoute{
		Override: &extprocv3.ExtProcPerRoute_Disabled{Disabled: true},
	})
}
