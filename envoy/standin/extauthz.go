package standin

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"golang.org/x/net/http/httpguts"
	"google.golang.org/genproto/googleapis/rpc/code"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/timestamppb"
)

const partialBodyHeader = "x-envoy-auth-partial-body"

// authorize is the ext_authz filter: true lets the request go on; false
// means a reply went out. Like Envoy's it checks nothing without a route
// (the router answers 404) or on a route that disables it.
func (p *pipeline) authorize(ex *exchange) bool {
	f := p.cfg.listener.authz
	if f == nil || ex.route == nil || ex.route.authzOff[f.name] {
		return true
	}
	if f.withBody && !ex.body.complete {
		if err := ex.body.fill(f.maxBody + 1); err != nil {
			p.bodyFailed(ex, err)
			return false
		}
		if !f.allowPartial && len(ex.body.buf) > f.maxBody {
			p.reply(ex, localReply{status: http.StatusRequestEntityTooLarge, body: "Payload Too Large",
				details: "request_payload_too_large"})
			return false
		}
	}
	resp, err := p.check(ex, f)
	switch {
	case err != nil:
		p.g.metrics.authz.WithLabelValues("error").Inc()
		p.g.throttledWarn("ext_authz call failed", "cluster", f.cluster, "error", err)
		if f.failureModeAllow {
			return true
		}
		p.reply(ex, authzErrorReply(f))
		return false
	case code.Code(resp.GetStatus().GetCode()) == code.Code_OK:
		if err := applyOK(ex, resp.GetOkResponse()); err != nil {
			p.g.metrics.authz.WithLabelValues("error").Inc()
			p.g.throttledWarn("ext_authz answer refused", "error", err)
			if f.failureModeAllow {
				return true
			}
			p.reply(ex, authzErrorReply(f))
			return false
		}
		p.g.metrics.authz.WithLabelValues("ok").Inc()
		return true
	}
	p.g.metrics.authz.WithLabelValues("denied").Inc()
	d := resp.GetDeniedResponse()
	status := http.StatusForbidden // also for a code that is no final HTTP status, as Envoy maps it
	if c := int(d.GetStatus().GetCode()); c >= 200 && c <= 599 {
		status = c
	}
	h := http.Header{}
	for _, o := range d.GetHeaders() {
		headerOpOf(o, false).apply(h)
	}
	p.reply(ex, localReply{status: status, header: h, body: d.GetBody(), details: "ext_authz_denied", flag: flagExtAuthz})
	return false
}

// authzErrorReply is Envoy's answer when the ext_authz call failed (or its
// answer was refused) and the failure mode denies: status_on_error, no body.
func authzErrorReply(f *authzFilter) localReply {
	return localReply{status: f.statusOnError, details: "ext_authz_error", flag: flagExtAuthz}
}

// check sends the CheckRequest Envoy builds, within the filter's timeout
// and the cluster's max_requests.
func (p *pipeline) check(ex *exchange, f *authzFilter) (*authv3.CheckResponse, error) {
	return callFilter(p, ex, f.cluster, f.timeout, func(ctx context.Context, conn *grpc.ClientConn) (*authv3.CheckResponse, error) {
		return authv3.NewAuthorizationClient(conn).Check(ctx, checkRequest(ex, f))
	})
}

// callFilter makes a filter's gRPC call to its cluster as Envoy does:
// within the cluster's max_requests, on its connection, within the
// filter's timeout.
func callFilter[T any](p *pipeline, ex *exchange, cluster string, timeout time.Duration,
	call func(context.Context, *grpc.ClientConn) (T, error)) (T, error) {
	var zero T
	u := p.upstreams[cluster]
	release, err := u.admit()
	if err != nil {
		return zero, err
	}
	defer release()
	conn, err := u.grpcConn()
	if err != nil {
		return zero, err
	}
	ctx, cancel := context.WithTimeout(ex.r.Context(), timeout)
	defer cancel()
	return call(ctx, conn)
}

// checkRequest is the CheckRequest Envoy's ext_authz filter sends: the
// peers, and the request with lower-case headers (pseudo-headers included,
// repeated ones joined by ","), the path with its query, and the body up to
// the filter's bound with x-envoy-auth-partial-body saying whether it was
// cut. Every string is valid UTF-8 (see validUTF8): the client's bytes
// could otherwise make the message impossible to marshal.
func checkRequest(ex *exchange, f *authzFilter) *authv3.CheckRequest {
	r := ex.r
	headers := map[string]string{
		":authority": validUTF8(ex.authority), ":path": validUTF8(ex.path), ":method": validUTF8(r.Method), ":scheme": "http",
	}
	for k, vs := range ex.header {
		lk := strings.ToLower(k)
		if lk == partialBodyHeader {
			continue // a client's copy would lie about the body
		}
		headers[lk] = validUTF8(strings.Join(vs, ","))
	}
	hr := &authv3.AttributeContext_HttpRequest{
		Id:       validUTF8(ex.header.Get("X-Request-Id")),
		Method:   validUTF8(r.Method),
		Headers:  headers,
		Path:     validUTF8(ex.path),
		Host:     validUTF8(ex.authority),
		Scheme:   "http",
		Size:     int64(len(ex.body.buf)),
		Protocol: validUTF8(protocol(r)),
	}
	if f.withBody && len(ex.body.buf) > 0 {
		n := min(len(ex.body.buf), f.maxBody)
		if f.packAsBytes {
			hr.RawBody = ex.body.buf[:n]
		} else {
			hr.Body = validUTF8(string(ex.body.buf[:n]))
		}
		headers[partialBodyHeader] = strconv.FormatBool(n != len(ex.body.buf))
	}
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Source:      &authv3.AttributeContext_Peer{Address: socketAddress(r.RemoteAddr)},
		Destination: &authv3.AttributeContext_Peer{Address: socketAddress(localAddr(r))},
		Request:     &authv3.AttributeContext_Request{Time: timestamppb.New(ex.start), Http: hr},
	}}
}

// validUTF8 is s with every byte that is not part of valid UTF-8 replaced
// by '!', as Envoy sanitises the strings it sends in gRPC calls (its
// MessageUtil::sanitizeUtf8String: one '!' per invalid byte).
func validUTF8(s string) string {
	if utf8.ValidString(s) {
		return s
	}
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && n == 1 {
			b.WriteByte('!')
		} else {
			b.WriteString(s[i : i+n])
		}
		i += n
	}
	return b.String()
}

// protocol is the request's protocol as Envoy names it.
func protocol(r *http.Request) string {
	if r.ProtoMajor == 2 {
		return "HTTP/2"
	}
	return r.Proto
}

func localAddr(r *http.Request) string {
	if a, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr); ok {
		return a.String()
	}
	return ""
}

func socketAddress(hostport string) *corev3.Address {
	host, port, err := net.SplitHostPort(hostport)
	if err != nil {
		return nil
	}
	n, _ := strconv.ParseUint(port, 10, 32)
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Address: host, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: uint32(n)},
	}}}
}

// applyOK applies an OK answer's mutations as Envoy does: headers by their
// append_action (see headerOpOf), headers removed, query parameters set and
// removed, and response headers kept for the client's response. A header
// that is not a valid name or value refuses the whole answer.
func applyOK(ex *exchange, ok *authv3.OkHttpResponse) error {
	for _, o := range append(ok.GetHeaders(), ok.GetResponseHeadersToAdd()...) {
		k, v := o.GetHeader().GetKey(), o.GetHeader().GetValue()
		if !httpguts.ValidHeaderFieldName(k) || !httpguts.ValidHeaderFieldValue(v) {
			return fmt.Errorf("header %q: not a valid header", k)
		}
	}
	for _, o := range ok.GetHeaders() {
		headerOpOf(o, true).apply(ex.header)
	}
	for _, name := range ok.GetHeadersToRemove() {
		if strings.HasPrefix(name, ":") || strings.EqualFold(name, "host") {
			continue // Envoy never removes pseudo-headers or the host
		}
		ex.header.Del(name)
	}
	for _, o := range ok.GetResponseHeadersToAdd() {
		ex.respOps = append(ex.respOps, headerOpOf(o, false))
	}
	if len(ok.GetQueryParametersToSet()) > 0 || len(ok.GetQueryParametersToRemove()) > 0 {
		ex.path = mutateQuery(ex.path, ok)
	}
	return nil
}

// mutateQuery sets and removes query parameters (by their encoded name),
// keeping the order of the others.
func mutateQuery(pathQuery string, ok *authv3.OkHttpResponse) string {
	path, query, _ := strings.Cut(pathQuery, "?")
	var params []string
	if query != "" {
		params = strings.Split(query, "&")
	}
	drop := func(name string) {
		out := params[:0]
		for _, kv := range params {
			if k, _, _ := strings.Cut(kv, "="); k != name {
				out = append(out, kv)
			}
		}
		params = out
	}
	for _, name := range ok.GetQueryParametersToRemove() {
		drop(name)
	}
	for _, qp := range ok.GetQueryParametersToSet() {
		drop(qp.GetKey())
		params = append(params, qp.GetKey()+"="+qp.GetValue())
	}
	if len(params) == 0 {
		return path
	}
	return path + "?" + strings.Join(params, "&")
}
