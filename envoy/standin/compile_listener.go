package standin

import (
	"errors"
	"fmt"
	"net"
	"regexp"
	"strconv"
	"strings"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	extauthzv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	ratelimitfilterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ratelimit/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	headermutationv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/http/early_header_mutation/header_mutation/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// listenerConfig is a compiled Listener: its one HTTP connection manager.
type listenerConfig struct {
	name    string
	address string // what LDS says; the gateway listens on -listen
	routes  string // the route configuration's name (RDS)
	server  serverSettings
	// early removes matching request headers before any filter runs.
	early                []headerRemoval
	normalizePath        bool
	mergeSlashes         bool
	rejectEscapedSlashes bool
	// useRemoteAddress makes every request an edge request (Envoy ≥ 1.36
	// trusts no address as internal by default): the client's address is
	// appended to x-forwarded-for and put in x-envoy-external-address.
	useRemoteAddress bool
	// generateRequestID sets a fresh x-request-id (a UUIDv4) on a request
	// without one, and on every edge request (replacing the client's).
	generateRequestID bool
	authz             *authzFilter     // nil: no ext_authz filter
	limit             *rateLimitFilter // nil: no ratelimit filter
	extProc           *extProcFilter   // nil: no ext_proc filter
	// localReply formats the gateway's own replies; nil is Envoy's
	// default (the body as it is, text/plain).
	localReply *localReplyFormat
}

// serverSettings are the connection manager's settings that belong to the
// HTTP server itself; a change of them replaces the server (as Envoy drains
// a changed listener).
type serverSettings struct {
	http1, h2c     bool
	idleTimeout    time.Duration // 0: none
	headersTimeout time.Duration // 0: none
	maxHeaderBytes int
}

// headerRemoval removes the request headers whose lower-case name is name
// or matches re.
type headerRemoval struct {
	name string
	re   *regexp.Regexp
}

func (h headerRemoval) matches(lower string) bool {
	if h.re != nil {
		return h.re.MatchString(lower)
	}
	return lower == h.name
}

// authzFilter is a compiled ext_authz filter (gRPC service only).
type authzFilter struct {
	name             string // the filter's name: the key of its per-route config
	cluster          string
	timeout          time.Duration
	failureModeAllow bool
	withBody         bool
	maxBody          int
	allowPartial     bool
	packAsBytes      bool
	statusOnError    int
}

// rateLimitFilter is a compiled ratelimit filter.
type rateLimitFilter struct {
	name            string
	domain          string
	cluster         string
	timeout         time.Duration
	failureModeDeny bool
	xHeaders        bool // DRAFT_VERSION_03
	statusOnError   int
}

// Envoy's defaults where the configuration leaves a field out.
const (
	defaultAuthzTimeout      = 200 * time.Millisecond
	defaultRateLimitTimeout  = 20 * time.Millisecond
	defaultAuthzStatusOnErr  = 403
	defaultLimitStatusOnErr  = 500
	defaultMaxRequestHeaders = 60 * 1024
)

func (c *compiler) listener(l *listenerv3.Listener) (*listenerConfig, error) {
	if err := c.allow.check(l.ProtoReflect(), ""); err != nil {
		return nil, err
	}
	out := &listenerConfig{name: l.GetName()}
	if sa := l.GetAddress().GetSocketAddress(); sa != nil {
		out.address = net.JoinHostPort(sa.GetAddress(), strconv.Itoa(int(sa.GetPortValue())))
	}
	if len(l.GetFilterChains()) != 1 || len(l.GetFilterChains()[0].GetFilters()) != 1 {
		return nil, fmt.Errorf("filter_chains: exactly one filter chain with one filter is implemented by the stand-in")
	}
	f := l.GetFilterChains()[0].GetFilters()[0]
	var hcm hcmv3.HttpConnectionManager
	if err := unpack(f.GetTypedConfig(), &hcm); err != nil {
		return nil, fmt.Errorf("filter_chains[0].filters[0] (%s): %w", f.GetName(), err)
	}
	if err := c.connectionManager(&hcm, out); err != nil {
		return nil, fmt.Errorf("filter_chains[0].filters[0].typed_config: %w", err)
	}
	return out, nil
}

// unpack reads a typed_config as msg's type, naming the type it holds when
// that is another.
func unpack(a *anypb.Any, msg proto.Message) error {
	if a == nil {
		return errors.New("typed_config is missing")
	}
	want := msg.ProtoReflect().Descriptor().FullName()
	if a.MessageName() != want {
		return fmt.Errorf("type %s is %w here (want %s)", a.MessageName(), errNotImplemented, want)
	}
	return a.UnmarshalTo(msg)
}

func (c *compiler) connectionManager(h *hcmv3.HttpConnectionManager, out *listenerConfig) error {
	switch h.GetCodecType() {
	case hcmv3.HttpConnectionManager_AUTO:
		out.server.http1, out.server.h2c = true, true
	case hcmv3.HttpConnectionManager_HTTP1:
		out.server.http1 = true
	case hcmv3.HttpConnectionManager_HTTP2:
		out.server.h2c = true
	default:
		return fmt.Errorf("codec_type %s is %w", h.GetCodecType(), errNotImplemented)
	}
	rds := h.GetRds()
	if rds == nil || rds.GetRouteConfigName() == "" {
		return errors.New("rds.route_config_name: the stand-in needs its routes from RDS")
	}
	if err := adsSource(rds.GetConfigSource()); err != nil {
		return fmt.Errorf("rds.config_source: %w", err)
	}
	out.routes = rds.GetRouteConfigName()
	out.useRemoteAddress = h.GetUseRemoteAddress().GetValue()
	out.generateRequestID = h.GetGenerateRequestId() == nil || h.GetGenerateRequestId().GetValue()
	out.normalizePath = h.GetNormalizePath().GetValue()
	out.mergeSlashes = h.GetMergeSlashes()
	switch h.GetPathWithEscapedSlashesAction() {
	case hcmv3.HttpConnectionManager_IMPLEMENTATION_SPECIFIC_DEFAULT, hcmv3.HttpConnectionManager_KEEP_UNCHANGED:
	case hcmv3.HttpConnectionManager_REJECT_REQUEST:
		out.rejectEscapedSlashes = true
	default:
		return fmt.Errorf("path_with_escaped_slashes_action %s is %w", h.GetPathWithEscapedSlashesAction(), errNotImplemented)
	}
	out.server.idleTimeout = time.Hour // Envoy's default idle_timeout
	if d := h.GetCommonHttpProtocolOptions().GetIdleTimeout(); d != nil {
		out.server.idleTimeout = d.AsDuration()
	}
	out.server.headersTimeout = h.GetRequestHeadersTimeout().AsDuration() // unset: 0, none
	out.server.maxHeaderBytes = defaultMaxRequestHeaders
	if kb := h.GetMaxRequestHeadersKb(); kb != nil {
		out.server.maxHeaderBytes = int(kb.GetValue()) * 1024
	}
	for i, ext := range h.GetEarlyHeaderMutationExtensions() {
		rm, err := earlyMutation(ext)
		if err != nil {
			return fmt.Errorf("early_header_mutation_extensions[%d]: %w", i, err)
		}
		out.early = append(out.early, rm...)
	}
	lr, err := compileLocalReply(h.GetLocalReplyConfig())
	if err != nil {
		return err
	}
	out.localReply = lr
	return c.httpFilters(h.GetHttpFilters(), out)
}

// adsSource accepts only "over the ADS stream, v3".
func adsSource(cs *corev3.ConfigSource) error {
	if cs.GetAds() == nil {
		return fmt.Errorf("only ads is implemented by the stand-in")
	}
	if cs.GetResourceApiVersion() != corev3.ApiVersion_V3 {
		return fmt.Errorf("resource_api_version %s: only V3 is implemented by the stand-in", cs.GetResourceApiVersion())
	}
	return nil
}

func earlyMutation(ext *corev3.TypedExtensionConfig) ([]headerRemoval, error) {
	var hm headermutationv3.HeaderMutation
	if err := unpack(ext.GetTypedConfig(), &hm); err != nil {
		return nil, fmt.Errorf("%s: %w", ext.GetName(), err)
	}
	var out []headerRemoval
	for i, m := range hm.GetMutations() {
		switch {
		case m.GetRemove() != "":
			out = append(out, headerRemoval{name: strings.ToLower(m.GetRemove())})
		case m.GetRemoveOnMatch() != nil:
			pattern := m.GetRemoveOnMatch().GetKeyMatcher().GetSafeRegex().GetRegex()
			// Envoy's safe_regex matches the whole string.
			re, err := regexp.Compile(`^(?:` + pattern + `)$`)
			if err != nil || pattern == "" {
				return nil, fmt.Errorf("mutations[%d].remove_on_match.key_matcher.safe_regex.regex %q: not a valid RE2 expression", i, pattern)
			}
			out = append(out, headerRemoval{re: re})
		default:
			return nil, fmt.Errorf("mutations[%d]: an action is required", i)
		}
	}
	return out, nil
}

// httpFilters compiles the filter chain: at most one each of ext_authz,
// ratelimit and ext_proc, in that order, and the router last.
func (c *compiler) httpFilters(filters []*hcmv3.HttpFilter, out *listenerConfig) error {
	if len(filters) == 0 {
		return errors.New("http_filters: the router filter is required")
	}
	for i, f := range filters {
		last := i == len(filters)-1
		var err error
		switch name := f.GetTypedConfig().MessageName(); {
		case name == (&routerv3.Router{}).ProtoReflect().Descriptor().FullName():
			if !last {
				err = errors.New("the router must be the last filter")
			}
		case last:
			err = errors.New("the last filter must be the router")
		case name == (&extauthzv3.ExtAuthz{}).ProtoReflect().Descriptor().FullName():
			if out.authz != nil || out.limit != nil || out.extProc != nil {
				err = fmt.Errorf("ext_authz after ext_authz or ratelimit is %w", errNotImplemented)
			} else {
				out.authz, err = authzConfig(f)
			}
		case name == (&ratelimitfilterv3.RateLimit{}).ProtoReflect().Descriptor().FullName():
			if out.limit != nil || out.extProc != nil {
				err = fmt.Errorf("ratelimit after ratelimit or ext_proc is %w", errNotImplemented)
			} else {
				out.limit, err = rateLimitConfig(f)
			}
		case name == (&extprocv3.ExternalProcessor{}).ProtoReflect().Descriptor().FullName():
			if out.extProc != nil {
				err = fmt.Errorf("a second ext_proc filter is %w", errNotImplemented)
			} else {
				out.extProc, err = extProcConfig(f)
			}
		default:
			err = fmt.Errorf("filter type %q is %w", f.GetTypedConfig().GetTypeUrl(), errNotImplemented)
		}
		if err != nil {
			return fmt.Errorf("http_filters[%d] (%s): %w", i, f.GetName(), err)
		}
	}
	return nil
}

func authzConfig(f *hcmv3.HttpFilter) (*authzFilter, error) {
	var a extauthzv3.ExtAuthz
	if err := unpack(f.GetTypedConfig(), &a); err != nil {
		return nil, err
	}
	gs := a.GetGrpcService()
	if gs.GetEnvoyGrpc().GetClusterName() == "" {
		return nil, errors.New("grpc_service.envoy_grpc.cluster_name is required")
	}
	if a.GetTransportApiVersion() != corev3.ApiVersion_V3 {
		return nil, fmt.Errorf("transport_api_version %s: only V3 is implemented by the stand-in", a.GetTransportApiVersion())
	}
	out := &authzFilter{
		name:             f.GetName(),
		cluster:          gs.GetEnvoyGrpc().GetClusterName(),
		timeout:          defaultAuthzTimeout,
		failureModeAllow: a.GetFailureModeAllow(),
		statusOnError:    defaultAuthzStatusOnErr,
	}
	if gs.GetTimeout() != nil {
		out.timeout = gs.GetTimeout().AsDuration()
	}
	if b := a.GetWithRequestBody(); b != nil {
		if b.GetMaxRequestBytes() == 0 {
			return nil, errors.New("with_request_body.max_request_bytes must be above 0")
		}
		out.withBody, out.maxBody = true, int(b.GetMaxRequestBytes())
		out.allowPartial, out.packAsBytes = b.GetAllowPartialMessage(), b.GetPackAsBytes()
	}
	if s := a.GetStatusOnError(); s != nil {
		code, err := httpStatus(s.GetCode())
		if err != nil {
			return nil, fmt.Errorf("status_on_error: %w", err)
		}
		out.statusOnError = code
	}
	return out, nil
}

func rateLimitConfig(f *hcmv3.HttpFilter) (*rateLimitFilter, error) {
	var r ratelimitfilterv3.RateLimit
	if err := unpack(f.GetTypedConfig(), &r); err != nil {
		return nil, err
	}
	if r.GetDomain() == "" {
		return nil, errors.New("domain is required")
	}
	svc := r.GetRateLimitService()
	if svc.GetGrpcService().GetEnvoyGrpc().GetClusterName() == "" {
		return nil, errors.New("rate_limit_service.grpc_service.envoy_grpc.cluster_name is required")
	}
	if svc.GetTransportApiVersion() != corev3.ApiVersion_V3 {
		return nil, fmt.Errorf("rate_limit_service.transport_api_version %s: only V3 is implemented by the stand-in", svc.GetTransportApiVersion())
	}
	if svc.GetGrpcService().GetTimeout() != nil {
		return nil, fmt.Errorf("rate_limit_service.grpc_service.timeout is %w (the filter's timeout is)", errNotImplemented)
	}
	out := &rateLimitFilter{
		name:            f.GetName(),
		domain:          r.GetDomain(),
		cluster:         svc.GetGrpcService().GetEnvoyGrpc().GetClusterName(),
		timeout:         defaultRateLimitTimeout,
		failureModeDeny: r.GetFailureModeDeny(),
		xHeaders:        r.GetEnableXRatelimitHeaders() == ratelimitfilterv3.RateLimit_DRAFT_VERSION_03,
		statusOnError:   defaultLimitStatusOnErr,
	}
	if r.GetTimeout() != nil {
		out.timeout = r.GetTimeout().AsDuration()
	}
	if s := r.GetStatusOnError(); s != nil {
		code, err := httpStatus(s.GetCode())
		if err != nil {
			return nil, fmt.Errorf("status_on_error: %w", err)
		}
		out.statusOnError = code
	}
	return out, nil
}

// httpStatus is an Envoy StatusCode as an HTTP status (the enum's values
// are the codes).
func httpStatus[T ~int32](code T) (int, error) {
	if code < 100 || code > 599 {
		return 0, fmt.Errorf("code %d is not an HTTP status", code)
	}
	return int(code), nil
}
