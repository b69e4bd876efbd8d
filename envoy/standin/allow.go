package standin

import (
	"errors"
	"fmt"
	"strconv"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	mutationrulesv3 "github.com/envoyproxy/go-control-plane/envoy/config/common/mutation_rules/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	ratelimitconfv3 "github.com/envoyproxy/go-control-plane/envoy/config/ratelimit/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	extauthzv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	ratelimitfilterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ratelimit/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	headermutationv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/http/early_header_mutation/header_mutation/v3"
	upstreamhttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// allowList is, per message type, the fields the stand-in implements: the
// subset of Envoy's API the control plane generates (i8-spec). A set field
// outside it makes the resource refused, naming the field; a message type
// outside it (in a typed_config, say) is refused by name. It is built once
// per Gateway and never changed.
type allowList map[protoreflect.FullName]map[protoreflect.Name]bool

// leafTypes are well-known messages accepted whole (a duration, a wrapped
// scalar): they have no behaviour of their own to implement.
func leafTypes() []proto.Message {
	return []proto.Message{&durationpb.Duration{}, &wrapperspb.BoolValue{}, &wrapperspb.UInt32Value{}, &wrapperspb.UInt64Value{}}
}

func newAllowList() allowList {
	a := allowList{}
	add := func(m proto.Message, fields ...protoreflect.Name) {
		set := map[protoreflect.Name]bool{}
		for _, f := range fields {
			set[f] = true
		}
		a[m.ProtoReflect().Descriptor().FullName()] = set
	}
	for _, m := range leafTypes() {
		fields := m.ProtoReflect().Descriptor().Fields()
		set := map[protoreflect.Name]bool{}
		for i := range fields.Len() {
			set[fields.Get(i).Name()] = true
		}
		a[m.ProtoReflect().Descriptor().FullName()] = set
	}
	allowListener(add)
	allowRoutes(add)
	allowClusters(add)
	return a
}

// allowListener is LDS's part: the listener and its HTTP connection
// manager with the early header mutation and the four HTTP filters.
func allowListener(add func(proto.Message, ...protoreflect.Name)) {
	add(&listenerv3.Listener{}, "name", "address", "filter_chains")
	add(&corev3.Address{}, "socket_address")
	add(&corev3.SocketAddress{}, "address", "port_value")
	add(&listenerv3.FilterChain{}, "filters")
	add(&listenerv3.Filter{}, "name", "typed_config")
	add(&hcmv3.HttpConnectionManager{}, "codec_type", "stat_prefix", "rds", "http_filters", "normalize_path",
		"merge_slashes", "path_with_escaped_slashes_action", "common_http_protocol_options",
		"request_headers_timeout", "max_request_headers_kb", "early_header_mutation_extensions",
		"local_reply_config", "use_remote_address", "generate_request_id", "internal_address_config")
	// Empty only: no address is internal, so every request is an edge
	// request, as the stand-in treats it.
	add(&hcmv3.HttpConnectionManager_InternalAddressConfig{})
	add(&hcmv3.Rds{}, "route_config_name", "config_source")
	add(&corev3.ConfigSource{}, "ads", "resource_api_version")
	add(&corev3.AggregatedConfigSource{})
	add(&corev3.HttpProtocolOptions{}, "idle_timeout")
	add(&corev3.TypedExtensionConfig{}, "name", "typed_config")
	add(&headermutationv3.HeaderMutation{}, "mutations")
	add(&mutationrulesv3.HeaderMutation{}, "remove", "remove_on_match")
	add(&mutationrulesv3.HeaderMutation_RemoveOnMatch{}, "key_matcher")
	add(&matcherv3.StringMatcher{}, "safe_regex")
	add(&matcherv3.RegexMatcher{}, "regex")
	add(&hcmv3.HttpFilter{}, "name", "typed_config")
	add(&extauthzv3.ExtAuthz{}, "grpc_service", "transport_api_version", "failure_mode_allow",
		"with_request_body", "status_on_error")
	add(&corev3.GrpcService{}, "envoy_grpc", "timeout")
	add(&corev3.GrpcService_EnvoyGrpc{}, "cluster_name")
	add(&extauthzv3.BufferSettings{}, "max_request_bytes", "allow_partial_message", "pack_as_bytes")
	add(&typev3.HttpStatus{}, "code")
	add(&ratelimitfilterv3.RateLimit{}, "domain", "timeout", "failure_mode_deny", "rate_limit_service",
		"enable_x_ratelimit_headers", "status_on_error")
	add(&ratelimitconfv3.RateLimitServiceConfig{}, "grpc_service", "transport_api_version")
	add(&extprocv3.ExternalProcessor{}, "grpc_service", "failure_mode_allow", "processing_mode", "message_timeout")
	add(&extprocv3.ProcessingMode{}, "request_header_mode", "response_header_mode", "request_body_mode",
		"response_body_mode", "request_trailer_mode", "response_trailer_mode")
	add(&routerv3.Router{})
	allowLocalReply(add)
}

// allowLocalReply is the connection manager's local_reply_config: mappers
// on a response flag, a status or both, and body formats whose values
// compileLocalReply checks further (literal text or one operator).
func allowLocalReply(add func(proto.Message, ...protoreflect.Name)) {
	add(&hcmv3.LocalReplyConfig{}, "mappers", "body_format")
	add(&hcmv3.ResponseMapper{}, "filter", "body_format_override")
	add(&accesslogv3.AccessLogFilter{}, "status_code_filter", "response_flag_filter", "and_filter")
	add(&accesslogv3.StatusCodeFilter{}, "comparison")
	add(&accesslogv3.ComparisonFilter{}, "op", "value")
	add(&corev3.RuntimeUInt32{}, "default_value")
	add(&accesslogv3.ResponseFlagFilter{}, "flags")
	add(&accesslogv3.AndFilter{}, "filters")
	add(&corev3.SubstitutionFormatString{}, "json_format", "text_format_source", "content_type")
	add(&corev3.DataSource{}, "inline_string")
	add(&structpb.Struct{}, "fields")
	add(&structpb.Value{}, "string_value")
}

// allowRoutes is RDS's part, with the two per-route filter configurations.
func allowRoutes(add func(proto.Message, ...protoreflect.Name)) {
	add(&routev3.RouteConfiguration{}, "name", "virtual_hosts")
	add(&routev3.VirtualHost{}, "name", "domains", "routes")
	add(&routev3.Route{}, "name", "match", "route", "typed_per_filter_config")
	add(&routev3.RouteMatch{}, "prefix")
	add(&routev3.RouteAction{}, "cluster", "timeout", "prefix_rewrite", "retry_policy")
	add(&routev3.RetryPolicy{}, "retry_on", "num_retries", "retry_back_off")
	add(&routev3.RetryPolicy_RetryBackOff{}, "base_interval", "max_interval")
	add(&extauthzv3.ExtAuthzPerRoute{}, "disabled")
	add(&ratelimitfilterv3.RateLimitPerRoute{}, "rate_limits")
	add(&extprocv3.ExtProcPerRoute{}, "disabled")
	add(&routev3.RateLimit{}, "actions", "hits_addend")
	add(&routev3.RateLimit_Action{}, "request_headers")
	add(&routev3.RateLimit_Action_RequestHeaders{}, "header_name", "descriptor_key", "skip_if_absent")
	add(&routev3.RateLimit_HitsAddend{}, "number", "format")
}

// allowClusters is CDS's and EDS's part.
func allowClusters(add func(proto.Message, ...protoreflect.Name)) {
	add(&clusterv3.Cluster{}, "name", "type", "eds_cluster_config", "connect_timeout", "lb_policy",
		"circuit_breakers", "outlier_detection", "typed_extension_protocol_options")
	add(&clusterv3.Cluster_EdsClusterConfig{}, "eds_config", "service_name")
	add(&clusterv3.CircuitBreakers{}, "thresholds")
	add(&clusterv3.CircuitBreakers_Thresholds{}, "priority", "max_connections", "max_pending_requests",
		"max_requests", "max_retries")
	add(&clusterv3.OutlierDetection{}, "consecutive_5xx", "interval", "base_ejection_time", "max_ejection_percent")
	add(&upstreamhttpv3.HttpProtocolOptions{}, "explicit_http_config")
	add(&upstreamhttpv3.HttpProtocolOptions_ExplicitHttpConfig{}, "http_protocol_options", "http2_protocol_options")
	add(&corev3.Http1ProtocolOptions{})
	add(&corev3.Http2ProtocolOptions{})
	add(&endpointv3.ClusterLoadAssignment{}, "cluster_name", "endpoints")
	// load_balancing_weight: Envoy ignores locality weights unless the
	// cluster asks for locality-weighted balancing (which the allow-list
	// refuses), so accepting and ignoring it is what Envoy does; the
	// translator sets it for gRPC's xDS client, which needs it.
	add(&endpointv3.LocalityLbEndpoints{}, "locality", "lb_endpoints", "load_balancing_weight")
	add(&corev3.Locality{}, "region", "zone", "sub_zone")
	add(&endpointv3.LbEndpoint{}, "endpoint", "health_status")
	add(&endpointv3.Endpoint{}, "address")
}

// errNotImplemented marks a refusal for something the stand-in does not
// implement (as opposed to a value that is wrong).
var errNotImplemented = errors.New("not implemented by the stand-in")

// check walks every set field of m (and of every message inside it,
// typed_config Anys unpacked) and reports the first one outside the
// allow-list, with its path from the resource: "filter_chains[0].filters[0]
// .typed_config(…HttpConnectionManager): field use_remote_address is not
// implemented by the stand-in". Unknown fields (from an API newer than the
// stand-in's) are refused too.
func (a allowList) check(m protoreflect.Message, path string) error {
	d := m.Descriptor()
	if d.FullName() == "google.protobuf.Any" {
		return a.checkAny(m, path)
	}
	fields, ok := a[d.FullName()]
	if !ok {
		return fmt.Errorf("%s: message type %s is %w", where(path), d.FullName(), errNotImplemented)
	}
	if len(m.GetUnknown()) > 0 {
		return fmt.Errorf("%s: unknown fields of %s are %w", where(path), d.FullName(), errNotImplemented)
	}
	var err error
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		if !fields[fd.Name()] {
			err = fmt.Errorf("%s: field %s is %w", where(path), fd.Name(), errNotImplemented)
			return false
		}
		err = a.checkValue(fd, v, join(path, string(fd.Name())))
		return err == nil
	})
	return err
}

func (a allowList) checkValue(fd protoreflect.FieldDescriptor, v protoreflect.Value, path string) error {
	switch {
	case fd.IsList():
		if fd.Kind() != protoreflect.MessageKind {
			return nil
		}
		l := v.List()
		for i := range l.Len() {
			if err := a.check(l.Get(i).Message(), path+"["+strconv.Itoa(i)+"]"); err != nil {
				return err
			}
		}
	case fd.IsMap():
		if fd.MapValue().Kind() != protoreflect.MessageKind {
			return nil
		}
		var err error
		v.Map().Range(func(k protoreflect.MapKey, mv protoreflect.Value) bool {
			err = a.check(mv.Message(), path+"["+strconv.Quote(k.String())+"]")
			return err == nil
		})
		return err
	case fd.Kind() == protoreflect.MessageKind || fd.Kind() == protoreflect.GroupKind:
		return a.check(v.Message(), path)
	}
	return nil
}

// checkAny unpacks a typed_config and checks what it holds; a type the
// stand-in has never heard of is refused by its type URL.
func (a allowList) checkAny(m protoreflect.Message, path string) error {
	anyMsg, ok := m.Interface().(*anypb.Any)
	if !ok {
		return fmt.Errorf("%s: a google.protobuf.Any of an unexpected Go type", where(path))
	}
	inner, err := anyMsg.UnmarshalNew()
	if errors.Is(err, protoregistry.NotFound) {
		return fmt.Errorf("%s: extension type %s is %w", where(path), anyMsg.GetTypeUrl(), errNotImplemented)
	}
	if err != nil {
		return fmt.Errorf("%s: %s: %w", where(path), anyMsg.GetTypeUrl(), err)
	}
	name := inner.ProtoReflect().Descriptor().FullName()
	if _, ok := a[name]; !ok {
		return fmt.Errorf("%s: extension type %s is %w", where(path), name, errNotImplemented)
	}
	return a.check(inner.ProtoReflect(), path+"("+string(name)+")")
}

func join(path, field string) string {
	if path == "" {
		return field
	}
	return path + "." + field
}

func where(path string) string {
	if path == "" {
		return "(top level)"
	}
	return path
}
