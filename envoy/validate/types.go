package validate

import (
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	filelogv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/file/v3"
	grpclogv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/grpc/v3"
	streamlogv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/stream/v3"
	bufferv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/buffer/v3"
	corsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/cors/v3"
	extauthzv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	faultv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/fault/v3"
	grpcwebv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/grpc_web/v3"
	headermutationfilterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/header_mutation/v3"
	healthcheckv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/health_check/v3"
	localratelimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/local_ratelimit/v3"
	luav3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/lua/v3"
	ratelimitfilterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ratelimit/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	headermutationv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/http/early_header_mutation/header_mutation/v3"
	rawbufferv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/raw_buffer/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	upstreamhttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoregistry"
)

// extensions is every message a typed_config (or another Any) may hold:
// the ones the control plane's translator generates, then ones a
// hand-written configuration commonly adds. A type URL outside this list is
// refused, naming it, even when Envoy knows the type: add it here first.
func extensions() []proto.Message {
	return []proto.Message{
		// What the translator generates.
		&hcmv3.HttpConnectionManager{},
		&headermutationv3.HeaderMutation{},
		&extauthzv3.ExtAuthz{},
		&extauthzv3.ExtAuthzPerRoute{},
		&ratelimitfilterv3.RateLimit{},
		&ratelimitfilterv3.RateLimitPerRoute{},
		&extprocv3.ExternalProcessor{},
		&extprocv3.ExtProcPerRoute{},
		&routerv3.Router{},
		&upstreamhttpv3.HttpProtocolOptions{},
		// What a hand-written file (or a later issue) may add.
		&grpclogv3.HttpGrpcAccessLogConfig{},
		&filelogv3.FileAccessLog{},
		&streamlogv3.StdoutAccessLog{},
		&streamlogv3.StderrAccessLog{},
		&headermutationfilterv3.HeaderMutation{},
		&headermutationfilterv3.HeaderMutationPerRoute{},
		&corsv3.Cors{},
		&corsv3.CorsPolicy{},
		&localratelimitv3.LocalRateLimit{},
		&healthcheckv3.HealthCheck{},
		&luav3.Lua{},
		&luav3.LuaPerRoute{},
		&bufferv3.Buffer{},
		&bufferv3.BufferPerRoute{},
		&grpcwebv3.GrpcWeb{},
		&faultv3.HTTPFault{},
		&tcpproxyv3.TcpProxy{},
		&tlsv3.UpstreamTlsContext{},
		&tlsv3.DownstreamTlsContext{},
		&rawbufferv3.RawBuffer{},
		&routev3.FilterConfig{},
	}
}

// resolver resolves exactly the extensions' type URLs.
func resolver() (*protoregistry.Types, error) {
	var r protoregistry.Types
	for _, m := range extensions() {
		if err := r.RegisterMessage(m.ProtoReflect().Type()); err != nil {
			return nil, err
		}
	}
	return &r, nil
}
