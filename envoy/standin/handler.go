package standin

import (
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
)

// pipeline is one applied configuration in executable form: the listener's
// filters, the routes and the clusters' runtimes. Requests load the current
// pipeline once and run on it to the end, so an update never changes a
// request half-way.
type pipeline struct {
	cfg       *config
	upstreams map[string]*upstream
	g         *Gateway
}

// exchange is one request on its way through the filters.
type exchange struct {
	w         http.ResponseWriter
	r         *http.Request
	start     time.Time
	authority string
	path      string // normalised, with the query
	header    http.Header
	body      *requestBody
	route     *route
	// respOps are what the filters add to the client's response (ext_authz
	// response_headers_to_add, the rate-limit headers), whatever answers.
	respOps []headerOp
	// meter is the request's ext_proc stream; nil when the filter does not
	// process this request.
	meter *meter
	// rc sets the connection's deadlines: every read of the body and every
	// write of the response must make progress within idle.
	rc   *http.ResponseController
	idle time.Duration
}

// extendWrite gives the next write to the client the stream idle timeout.
// (Renewed before each write, it never cuts a response that keeps
// flowing.)
func (ex *exchange) extendWrite() {
	_ = ex.rc.SetWriteDeadline(time.Now().Add(ex.idle)) // not supported: no timeout
}

// hopByHop are the headers a proxy does not forward.
var hopByHop = []string{"Connection", "Keep-Alive", "Proxy-Connection", "Proxy-Authenticate",
	"Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade"}

func removeHopByHop(h http.Header) {
	for _, f := range h.Values("Connection") {
		for _, name := range strings.Split(f, ",") {
			h.Del(strings.TrimSpace(name))
		}
	}
	for _, name := range hopByHop {
		h.Del(name)
	}
}

// serve runs one request through the connection manager: path checks,
// early header mutation, route selection, ext_authz, ratelimit and the
// router.
func (p *pipeline) serve(w http.ResponseWriter, r *http.Request) {
	ex := &exchange{w: w, r: r, start: time.Now(), authority: r.Host, header: r.Header.Clone(),
		rc: http.NewResponseController(w), idle: p.g.streamIdle}
	ex.extendWrite() // the server's own writes too (100 Continue)
	if r.ProtoMajor == 1 && r.ProtoMinor == 0 {
		p.reply(ex, localReply{status: http.StatusUpgradeRequired, details: "low_version"})
		return
	}
	if headerBytes(r) > p.cfg.listener.server.maxHeaderBytes {
		p.reply(ex, localReply{status: http.StatusRequestHeaderFieldsTooLarge,
			body: "Request Header Fields Too Large", details: "http1.headers_too_large"})
		return
	}
	path, query, refused := p.requestPath(r)
	if refused != "" {
		p.reply(ex, localReply{status: http.StatusBadRequest, details: refused})
		return
	}
	ex.path = path + query
	removeHopByHop(ex.header)
	p.earlyMutation(ex.header)
	p.edgeHeaders(ex.header, r.RemoteAddr)
	ex.body = newRequestBody(r, ex.rc, ex.idle)
	ex.route = p.match(ex.authority, path)
	defer func() { ex.meter.close() }() // whatever happens, the processor's stream ends with the request
	if !p.authorize(ex) || !p.rateLimit(ex) || !p.processRequest(ex) {
		return
	}
	if ex.route == nil {
		p.reply(ex, localReply{status: http.StatusNotFound, details: "route_not_found", flag: flagNoRoute})
		return
	}
	p.forward(ex)
}

// internalOnly are the x-envoy-* request headers Envoy's connection manager
// removes from every request that is not internal (and with Envoy ≥ 1.36's
// default internal_address_config no request is): a client must not steer
// the router's retries and timeouts.
var internalOnly = []string{"X-Envoy-Retry-On", "X-Envoy-Retry-Grpc-On", "X-Envoy-Max-Retries",
	"X-Envoy-Upstream-Alt-Stat-Name", "X-Envoy-Upstream-Rq-Timeout-Ms", "X-Envoy-Upstream-Rq-Per-Try-Timeout-Ms",
	"X-Envoy-Upstream-Rq-Timeout-Alt-Response", "X-Envoy-Expected-Rq-Timeout-Ms", "X-Envoy-Force-Trace",
	"X-Envoy-Ip-Tags", "X-Envoy-Internal"}

// edgeOnly are the ones it removes from an edge request besides.
var edgeOnly = []string{"X-Envoy-Decorator-Operation", "X-Envoy-Downstream-Service-Cluster",
	"X-Envoy-Downstream-Service-Node"}

// edgeHeaders are the connection manager's request header mutations: the
// internal-only headers removed; with use_remote_address (an edge
// request) the client's address appended to x-forwarded-for and set as
// x-envoy-external-address, and x-forwarded-proto set to the scheme, else
// set only when missing; and x-request-id, when generate_request_id, set
// to a fresh UUIDv4 on an edge request (whatever the client sent: the
// id names the request's reservation) or when there is none.
func (p *pipeline) edgeHeaders(h http.Header, remoteAddr string) {
	l := p.cfg.listener
	for _, k := range internalOnly {
		h.Del(k)
	}
	if l.useRemoteAddress {
		for _, k := range edgeOnly {
			h.Del(k)
		}
		if ip, _, err := net.SplitHostPort(remoteAddr); err == nil {
			xff := append(h.Values("X-Forwarded-For"), ip)
			h.Set("X-Forwarded-For", strings.Join(xff, ","))
			h.Set("X-Envoy-External-Address", ip)
		}
		h.Set("X-Forwarded-Proto", "http")
	} else if h.Get("X-Forwarded-Proto") == "" {
		h.Set("X-Forwarded-Proto", "http")
	}
	if l.generateRequestID && (l.useRemoteAddress || h.Get("X-Request-Id") == "") {
		h.Set("X-Request-Id", uuid.NewString())
	}
}

// headerBytes is the size of the request's headers as Envoy counts them
// against max_request_headers_kb: every name and value, the pseudo-headers
// included. (The HTTP server's own bound, which also counts line endings,
// is set above it.)
func headerBytes(r *http.Request) int {
	n := len(":method") + len(r.Method) + len(":path") + len(r.RequestURI) + len(":authority") + len(r.Host)
	for k, vs := range r.Header {
		for _, v := range vs {
			n += len(k) + len(v)
		}
	}
	return n
}

// requestPath is the request's path, checked and normalised as the
// listener says, and its query ("?…" or ""). A path it refuses (answer 400)
// has refused set to Envoy's response code details for it: a request
// target that is no URL is the codec's http1.invalid_url, anything the
// connection manager's path checks refuse (a fragment, an escaped slash, a
// dot-segment above the root) path_normalization_failed.
func (p *pipeline) requestPath(r *http.Request) (path, query, refused string) {
	const badPath = "path_normalization_failed"
	raw := r.RequestURI
	if !strings.HasPrefix(raw, "/") { // absolute form
		u, err := url.ParseRequestURI(raw)
		if err != nil || u.Host == "" {
			return "", "", "http1.invalid_url"
		}
		raw = u.RequestURI()
	}
	if strings.ContainsRune(raw, '#') {
		return "", "", badPath
	}
	path, query = raw, ""
	if i := strings.IndexByte(raw, '?'); i >= 0 {
		path, query = raw[:i], raw[i:]
	}
	l := p.cfg.listener
	if l.rejectEscapedSlashes && hasEscapedSlash(path) {
		return "", "", badPath
	}
	if l.normalizePath {
		n, err := normalizePath(path)
		if err != nil {
			return "", "", badPath
		}
		path = n
	}
	if l.mergeSlashes {
		path = mergeSlashes(path)
	}
	return path, query, ""
}

// earlyMutation removes the headers the early header mutation extensions
// match, before any filter sees the request.
func (p *pipeline) earlyMutation(h http.Header) {
	rm := p.cfg.listener.early
	if len(rm) == 0 {
		return
	}
	for k := range h {
		lk := strings.ToLower(k)
		for _, m := range rm {
			if m.matches(lk) {
				delete(h, k)
				break
			}
		}
	}
}

// match selects the virtual host by the authority, then the first route
// whose prefix the path starts with. Nil: no route (the filters let it
// pass unchecked and the router answers 404, as Envoy does).
func (p *pipeline) match(authority, path string) *route {
	vh := p.cfg.routes.virtualHost(strings.ToLower(authority))
	if vh == nil {
		return nil
	}
	for _, r := range vh.routes {
		if strings.HasPrefix(path, r.prefix) {
			return r
		}
	}
	return nil
}

// virtualHost is Envoy's domain search: an exact match, then the longest
// suffix wildcard ("*.example.com"), then the longest prefix wildcard
// ("example.*"), then "*".
func (t *routeTable) virtualHost(host string) *virtualHost {
	var best *virtualHost
	bestRank, bestLen := 0, -1
	for _, vh := range t.vhosts {
		for _, d := range vh.domains {
			rank, n := domainRank(d, host)
			if rank > bestRank || rank == bestRank && rank > 0 && n > bestLen {
				best, bestRank, bestLen = vh, rank, n
			}
		}
	}
	return best
}

// domainRank scores how domain d matches host (0: no match; 4 exact, 3
// suffix wildcard, 2 prefix wildcard, 1 "*"), with the length matched.
func domainRank(d, host string) (int, int) {
	switch {
	case d == "*":
		return 1, 0
	case d == host:
		return 4, len(d)
	case strings.HasPrefix(d, "*") && strings.HasSuffix(host, d[1:]) && len(host) > len(d)-1:
		return 3, len(d)
	case strings.HasSuffix(d, "*") && strings.HasPrefix(host, d[:len(d)-1]) && len(host) > len(d)-1:
		return 2, len(d)
	}
	return 0, 0
}

// reply sends a local reply as Envoy's connection manager does: the
// refusing filter's headers, then the body the local_reply_config renders.
// A body the format left as it was keeps the content type the filter set
// (the service's own, for a passed-on denial); a changed body, or one
// without, gets the format's; an empty body has none. The filters'
// response headers (ext_authz response_headers_to_add, the rate-limit
// headers) go on last, as Envoy's encoder filters add them.
func (p *pipeline) reply(ex *exchange, lr localReply) {
	out := ex.w.Header()
	for k, v := range lr.header {
		out[k] = v
	}
	body, contentType := p.cfg.listener.localReply.rewrite(&lr)
	switch {
	case body == "":
		out.Del("Content-Type")
	case out.Get("Content-Type") == "" || body != lr.body:
		out.Set("Content-Type", contentType)
	}
	status := lr.status
	p.processLocalReply(ex, &status, out, &body)
	applyOps(out, ex.respOps)
	out.Set("Content-Length", strconv.Itoa(len(body)))
	ex.extendWrite()
	ex.w.WriteHeader(status)
	_, _ = ex.w.Write([]byte(body))
	p.g.metrics.requests.WithLabelValues(routeLabel(ex.route), strconv.Itoa(status)).Inc()
}

func routeLabel(r *route) string {
	if r == nil {
		return "(none)"
	}
	return r.label()
}
