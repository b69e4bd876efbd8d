package standin

import (
	"errors"
	"fmt"
	"time"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
)

// extProcFilter is a compiled ext_proc filter (gRPC service only): which
// parts of the request and response it sends the processor, how long it
// waits for each answer, and what a failure does.
type extProcFilter struct {
	name             string // the filter's name: the key of its per-route config
	cluster          string
	messageTimeout   time.Duration
	failureModeAllow bool
	requestHeaders   bool // request_header_mode SEND
	responseHeaders  bool // response_header_mode SEND
	requestBody      bool // request_body_mode BUFFERED (else NONE)
	responseBody     bool // response_body_mode STREAMED (else NONE)
}

// Envoy's defaults for the ext_proc filter.
const (
	defaultMessageTimeout = 200 * time.Millisecond
	maxMessageTimeout     = time.Hour
)

func extProcConfig(f *hcmv3.HttpFilter) (*extProcFilter, error) {
	var e extprocv3.ExternalProcessor
	if err := unpack(f.GetTypedConfig(), &e); err != nil {
		return nil, err
	}
	gs := e.GetGrpcService()
	if gs.GetEnvoyGrpc().GetClusterName() == "" {
		return nil, errors.New("grpc_service.envoy_grpc.cluster_name is required")
	}
	if gs.GetTimeout() != nil {
		return nil, fmt.Errorf("grpc_service.timeout is %w (message_timeout is)", errNotImplemented)
	}
	out := &extProcFilter{
		name:             f.GetName(),
		cluster:          gs.GetEnvoyGrpc().GetClusterName(),
		messageTimeout:   defaultMessageTimeout,
		failureModeAllow: e.GetFailureModeAllow(),
		requestHeaders:   true,
		responseHeaders:  true,
	}
	if d := e.GetMessageTimeout(); d != nil {
		out.messageTimeout = d.AsDuration()
		if out.messageTimeout <= 0 || out.messageTimeout >= maxMessageTimeout {
			return nil, fmt.Errorf("message_timeout %s: must be above 0 and below 1h", out.messageTimeout)
		}
	}
	if err := processingMode(e.GetProcessingMode(), out); err != nil {
		return nil, fmt.Errorf("processing_mode.%w", err)
	}
	return out, nil
}

// processingMode compiles the modes the stand-in implements: headers sent
// or skipped, the request body buffered or not sent, the response body
// streamed or not sent, no trailers. An unset mode is Envoy's default
// (headers SEND, bodies NONE, trailers SKIP).
func processingMode(m *extprocv3.ProcessingMode, out *extProcFilter) error {
	headers := func(field string, mode extprocv3.ProcessingMode_HeaderSendMode, dst *bool) error {
		switch mode {
		case extprocv3.ProcessingMode_DEFAULT, extprocv3.ProcessingMode_SEND:
			*dst = true
		case extprocv3.ProcessingMode_SKIP:
			*dst = false
		default:
			return fmt.Errorf("%s %s is %w", field, mode, errNotImplemented)
		}
		return nil
	}
	if err := headers("request_header_mode", m.GetRequestHeaderMode(), &out.requestHeaders); err != nil {
		return err
	}
	if err := headers("response_header_mode", m.GetResponseHeaderMode(), &out.responseHeaders); err != nil {
		return err
	}
	for _, t := range []struct {
		field string
		mode  extprocv3.ProcessingMode_HeaderSendMode
	}{{"request_trailer_mode", m.GetRequestTrailerMode()}, {"response_trailer_mode", m.GetResponseTrailerMode()}} {
		if t.mode != extprocv3.ProcessingMode_DEFAULT && t.mode != extprocv3.ProcessingMode_SKIP {
			return fmt.Errorf("%s %s is %w (only SKIP is)", t.field, t.mode, errNotImplemented)
		}
	}
	switch m.GetRequestBodyMode() {
	case extprocv3.ProcessingMode_NONE:
	case extprocv3.ProcessingMode_BUFFERED:
		out.requestBody = true
	default:
		return fmt.Errorf("request_body_mode %s is %w (NONE and BUFFERED are)", m.GetRequestBodyMode(), errNotImplemented)
	}
	switch m.GetResponseBodyMode() {
	case extprocv3.ProcessingMode_NONE:
	case extprocv3.ProcessingMode_STREAMED:
		out.responseBody = true
	default:
		return fmt.Errorf("response_body_mode %s is %w (NONE and STREAMED are)", m.GetResponseBodyMode(), errNotImplemented)
	}
	return nil
}
