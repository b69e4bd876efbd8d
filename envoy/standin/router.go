package standin

import (
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Envoy's local-reply bodies for the router's own answers.
const (
	bodyNoHealthyUpstream = "no healthy upstream"
	bodyTimeout           = "upstream request timeout"
)

// Envoy's reset reasons (Http::Utility::resetReasonToString) of an attempt
// that got no response headers.
const (
	resetOverflow          = "overflow"
	resetConnectFailure    = "remote connection failure"
	resetConnTermination   = "connection termination"
	bodyUpstreamResetStart = "upstream connect error or disconnect/reset before headers. "
)

// upstreamResetReply is the router's answer to a reset before any response
// headers, worded as Envoy's: the body names the reason ("retried and the
// latest" when the request was retried), the response code details are
// upstream_reset_before_response_started{reason}, spaces made '_'.
func upstreamResetReply(reason, flag string, retried bool) localReply {
	body := bodyUpstreamResetStart
	if retried {
		body += "retried and the latest "
	}
	return localReply{
		status:  http.StatusServiceUnavailable,
		body:    body + "reset reason: " + reason,
		details: "upstream_reset_before_response_started{" + strings.ReplaceAll(reason, " ", "_") + "}",
		flag:    flag,
	}
}

// failure classifies an attempt that got no response.
type failure int

const (
	failNone failure = iota
	failConnect
	failReset
	failTimeout
	failOverflow
)

// forward is the router: the route's cluster, round robin, the route
// timeout over every attempt, retries with jittered exponential backoff,
// and the response streamed to the client as it comes.
func (p *pipeline) forward(ex *exchange) {
	rt := ex.route
	u := p.upstreams[rt.cluster]
	ctx, cancel := ex.r.Context(), context.CancelFunc(func() {})
	if rt.timeout > 0 {
		ctx, cancel = context.WithTimeout(ctx, rt.timeout)
	}
	defer cancel()
	if rt.retry != nil && rt.retry.retries > 0 {
		if err := ex.body.fill(retryBufferLimit + 1); err != nil {
			p.bodyFailed(ex, err)
			return
		}
	}
	backoff := rt.retry.baseInterval()
	releaseRetry := func() {} // the max_retries slot of the retry in flight
	defer func() { releaseRetry() }()
	for attempt := 0; ; attempt++ {
		resp, fail, started := p.attempt(ctx, ex, u)
		releaseRetry() // as Envoy, a retry counts until its attempt's outcome
		if !p.shouldRetry(ex, u, attempt, resp, fail) {
			p.answer(ex, resp, fail, started, attempt > 0)
			return
		}
		release, ok := u.admitRetry()
		if !ok {
			p.answer(ex, resp, fail, started, attempt > 0)
			return
		}
		releaseRetry = release
		if resp != nil {
			_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
			resp.Body.Close()
		}
		p.g.metrics.retries.WithLabelValues(rt.cluster).Inc()
		wait := time.Duration(rand.Int64N(int64(backoff)))
		backoff = min(2*backoff, rt.retry.max)
		select {
		case <-ctx.Done():
			p.answer(ex, nil, failTimeout, time.Now(), true)
			return
		case <-time.After(wait):
		}
	}
}

func (rp *retryPolicy) baseInterval() time.Duration {
	if rp == nil {
		return defaultRetryBase
	}
	return rp.base
}

// shouldRetry applies the route's retry_on: 5xx (any 5xx, or no response),
// gateway-error (502, 503, 504), reset, connect-failure. A 429 is never
// retried, nor is a body too long to replay.
func (p *pipeline) shouldRetry(ex *exchange, u *upstream, attempt int, resp *http.Response, fail failure) bool {
	rp := ex.route.retry
	if rp == nil || attempt >= rp.retries || !ex.body.replayable() || fail == failTimeout || fail == failOverflow {
		return false
	}
	if resp != nil {
		s := resp.StatusCode
		return rp.on5xx && s >= 500 || rp.onGatewayError && (s == 502 || s == 503 || s == 504)
	}
	switch fail {
	case failConnect:
		return rp.on5xx || rp.onGatewayError || rp.onConnectFailure
	case failReset:
		return rp.on5xx || rp.onGatewayError || rp.onReset
	}
	return false
}

// attempt sends the request to one endpoint. It returns the response, or
// why there is none, and when the request went out.
func (p *pipeline) attempt(ctx context.Context, ex *exchange, u *upstream) (*http.Response, failure, time.Time) {
	started := time.Now()
	h := u.pick(started)
	if h == nil {
		return nil, failNone, started
	}
	release, err := u.admit()
	if err != nil {
		return nil, failOverflow, started
	}
	conn, err := u.connection(ctx)
	if err != nil {
		release()
		if ctx.Err() != nil {
			return nil, failTimeout, started
		}
		return nil, failOverflow, started
	}
	req := p.upstreamRequest(ctx, ex, h.addr)
	resp, err := u.transportFor().RoundTrip(req)
	if err != nil {
		release()
		conn()
		f := classify(ctx, err)
		if f != failTimeout && u.report(h, true, time.Now()) {
			p.g.metrics.ejections.WithLabelValues(u.name).Inc()
		}
		return nil, f, started
	}
	if u.report(h, resp.StatusCode >= 500, time.Now()) {
		p.g.metrics.ejections.WithLabelValues(u.name).Inc()
	}
	resp.Body = &releasingBody{ReadCloser: resp.Body, release: func() { release(); conn() }}
	return resp, failNone, started
}

func classify(ctx context.Context, err error) failure {
	if ctx.Err() != nil {
		return failTimeout
	}
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		return failConnect
	}
	return failReset
}

// releasingBody gives the request's circuit-breaker slots back once the
// response body is closed.
type releasingBody struct {
	io.ReadCloser
	release func()
}

func (b *releasingBody) Close() error {
	err := b.ReadCloser.Close()
	b.release()
	return err
}

func (u *upstream) transportFor() *http.Transport {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.transport
}

// upstreamRequest is the request as the router sends it: the path
// (prefix-rewritten, the original in x-envoy-original-path), the
// authority, the headers the filters left, and
// x-envoy-expected-rq-timeout-ms.
func (p *pipeline) upstreamRequest(ctx context.Context, ex *exchange, addr string) *http.Request {
	path := ex.path
	h := ex.header.Clone()
	if rt := ex.route; rt.rewrite {
		path = rt.prefixRewrite + strings.TrimPrefix(path, rt.prefix)
		h.Set("X-Envoy-Original-Path", ex.path)
	}
	u := &url.URL{Scheme: "http", Host: addr}
	pathOnly, query, _ := strings.Cut(path, "?")
	u.RawQuery = query
	if strings.HasPrefix(pathOnly, "//") {
		u.Path, _ = url.PathUnescape(pathOnly)
		u.RawPath = pathOnly
	} else {
		u.Opaque = pathOnly
	}
	if ex.route.timeout > 0 {
		h.Set("X-Envoy-Expected-Rq-Timeout-Ms", strconv.FormatInt(ex.route.timeout.Milliseconds(), 10))
	}
	req := (&http.Request{
		Method:        ex.r.Method,
		URL:           u,
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        h,
		Host:          ex.authority,
		ContentLength: ex.body.contentLength(),
	}).WithContext(ctx)
	if !ex.body.empty() {
		req.Body = io.NopCloser(ex.body.reader())
	}
	return req
}

// answer sends the client the upstream's response, or the router's own
// reply for why there is none (retried: the request had more than one
// attempt).
func (p *pipeline) answer(ex *exchange, resp *http.Response, fail failure, started time.Time, retried bool) {
	if resp == nil {
		if ex.body.timedOut.Load() { // the client stopped the body being streamed upstream
			p.reply(ex, streamTimeoutReply())
			return
		}
		p.reply(ex, failureReply(fail, retried))
		return
	}
	defer resp.Body.Close()
	h := resp.Header.Clone()
	removeHopByHop(h)
	h.Set("X-Envoy-Upstream-Service-Time", strconv.FormatInt(time.Since(started).Milliseconds(), 10))
	status := resp.StatusCode
	noBody := resp.Body == http.NoBody || resp.ContentLength == 0
	if lr := p.processResponseHeaders(ex, &status, h, noBody); lr != nil {
		p.reply(ex, *lr)
		return
	}
	out := ex.w.Header()
	for k, v := range h {
		out[k] = v
	}
	applyOps(out, ex.respOps)
	processed := ex.meter.streamsBody() && !noBody
	switch {
	case processed: // the processor may change the chunks: no length to declare
		out.Del("Content-Length")
	case resp.ContentLength >= 0 && out.Get("Content-Length") == "":
		out.Set("Content-Length", strconv.FormatInt(resp.ContentLength, 10))
	}
	ex.extendWrite()
	ex.w.WriteHeader(status)
	p.g.metrics.requests.WithLabelValues(ex.route.label(), strconv.Itoa(status)).Inc()
	var err error
	if processed {
		_ = ex.rc.Flush() // the headers go out now, as Envoy sends them once the processor answered
		err = p.streamProcessed(ex, resp.Body)
	} else {
		err = stream(ex, resp.Body)
	}
	if err != nil {
		// The upstream reset, the route timeout struck mid-body, or the
		// processor failed under failure_mode_allow false: reset the
		// client's stream too, as Envoy does (net/http's documented way to
		// abort a response); the processor's stream is cancelled with it.
		panic(http.ErrAbortHandler)
	}
	p.finishMeter(ex)
}

// failureReply is Envoy's router's answer for an attempt without a
// response.
func failureReply(fail failure, retried bool) localReply {
	switch fail {
	case failNone:
		return localReply{status: http.StatusServiceUnavailable, body: bodyNoHealthyUpstream,
			details: "no_healthy_upstream", flag: flagNoHealthyUpstream}
	case failTimeout:
		return localReply{status: http.StatusGatewayTimeout, body: bodyTimeout,
			details: "response_timeout", flag: flagUpstreamTimeout}
	case failOverflow:
		lr := upstreamResetReply(resetOverflow, flagOverflow, retried)
		lr.header = http.Header{"X-Envoy-Overloaded": {"true"}}
		return lr
	case failConnect:
		return upstreamResetReply(resetConnectFailure, flagConnectFailure, retried)
	}
	return upstreamResetReply(resetConnTermination, flagConnTermination, retried)
}

// stream copies the body, flushing after every read so that an event
// stream reaches the client event by event. Each write has the stream
// idle timeout: a client that stops reading is given up.
func stream(ex *exchange, body io.Reader) error {
	buf := make([]byte, 32<<10)
	for {
		n, err := body.Read(buf)
		if n > 0 {
			ex.extendWrite()
			if _, werr := ex.w.Write(buf[:n]); werr != nil {
				return nil // the client is gone or stalled; nothing to tell it
			}
			if ferr := ex.rc.Flush(); ferr != nil {
				return nil
			}
		}
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
	}
}
