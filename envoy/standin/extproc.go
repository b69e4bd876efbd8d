package standin

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	extprocsvcv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"golang.org/x/net/http/httpguts"
)

// meter is one request's ext_proc stream (the shared spec, wire agreement
// 4): opened with the first message, on the cluster's gRPC connection and
// within its max_requests, and cancelled with the request. Only the
// request's goroutine uses it; a nil meter is a request the filter does not
// process.
type meter struct {
	f       *extProcFilter
	u       *upstream
	ctx     context.Context
	cancel  context.CancelFunc
	stream  extprocsvcv3.ExternalProcessor_ProcessClient
	release func() // the cluster's max_requests slot; nil before the stream
	sent    bool   // the first message (with the protocol configuration) went out
	done    bool   // the processor is out of this request: closed, or failed
}

// errMessageTimeout is a processor that missed message_timeout.
var errMessageTimeout = errors.New("ext_proc message_timeout exceeded")

// active reports whether the processor still takes part in the request.
func (m *meter) active() bool { return m != nil && !m.done }

// close cancels the stream (the processor sees its context end) and gives
// the cluster's slot back. It is idempotent.
func (m *meter) close() {
	if m == nil {
		return
	}
	m.done = true
	m.cancel()
	if m.release != nil {
		m.release()
		m.release = nil
	}
}

// finish ends a stream whose last message was answered: it half-closes it
// and waits, up to message_timeout, for the processor to end it too, so
// that the processor sees a clean end of stream rather than a
// cancellation. It reports whether there was such a stream to finish.
func (m *meter) finish() bool {
	if !m.active() || m.stream == nil {
		m.close()
		return false
	}
	_ = m.stream.CloseSend()
	timer := time.AfterFunc(m.f.messageTimeout, m.cancel)
	for {
		if _, err := m.stream.Recv(); err != nil {
			break
		}
	}
	timer.Stop()
	m.close()
	return true
}

// roundTrip sends one message and waits for its answer, both within
// message_timeout (a missed timeout cancels the stream).
func (m *meter) roundTrip(req *extprocsvcv3.ProcessingRequest) (*extprocsvcv3.ProcessingResponse, error) {
	var timedOut atomic.Bool
	timer := time.AfterFunc(m.f.messageTimeout, func() { timedOut.Store(true); m.cancel() })
	defer timer.Stop()
	resp, err := m.exchange(req)
	if err != nil && timedOut.Load() {
		return nil, errMessageTimeout
	}
	return resp, err
}

func (m *meter) exchange(req *extprocsvcv3.ProcessingRequest) (*extprocsvcv3.ProcessingResponse, error) {
	if m.stream == nil {
		release, err := m.u.admit()
		if err != nil {
			return nil, err
		}
		m.release = release
		conn, err := m.u.grpcConn()
		if err != nil {
			return nil, err
		}
		if m.stream, err = extprocsvcv3.NewExternalProcessorClient(conn).Process(m.ctx); err != nil {
			return nil, err
		}
	}
	if !m.sent {
		req.ProtocolConfig = m.f.protocolConfig()
		m.sent = true
	}
	if err := m.stream.Send(req); err != nil && !errors.Is(err, io.EOF) {
		return nil, err // io.EOF: the stream ended; Recv says why
	}
	resp, err := m.stream.Recv()
	if errors.Is(err, io.EOF) {
		return nil, errors.New("the processor closed the stream")
	}
	return resp, err
}

// protocolConfig is what Envoy tells the processor with the first message.
func (f *extProcFilter) protocolConfig() *extprocsvcv3.ProtocolConfiguration {
	c := &extprocsvcv3.ProtocolConfiguration{RequestBodyMode: extprocv3.ProcessingMode_NONE, ResponseBodyMode: extprocv3.ProcessingMode_NONE}
	if f.requestBody {
		c.RequestBodyMode = extprocv3.ProcessingMode_BUFFERED
	}
	if f.responseBody {
		c.ResponseBodyMode = extprocv3.ProcessingMode_STREAMED
	}
	return c
}

// step sends req and applies its answer with apply. It returns nil when
// the request goes on (the answer applied, or the processor dropped after a
// failure under failure_mode_allow), else the local reply to send: the
// processor's immediate response, or the 500 of a failure. Either way the
// processor is then out of the request, so the reply does not pass it.
func (p *pipeline) step(ex *exchange, req *extprocsvcv3.ProcessingRequest, apply func(*extprocsvcv3.ProcessingResponse) error) *localReply {
	m := ex.meter
	resp, err := m.roundTrip(req)
	if err == nil {
		if ir := resp.GetImmediateResponse(); ir != nil {
			lr, ierr := immediateReply(ir)
			if ierr == nil {
				m.close()
				p.g.metrics.extProc.WithLabelValues("immediate_response").Inc()
				return &lr
			}
			err = ierr
		} else {
			err = apply(resp)
		}
	}
	if err == nil {
		return nil
	}
	m.close()
	p.g.metrics.extProc.WithLabelValues("error").Inc()
	if ex.r.Context().Err() == nil { // not merely the client gone
		p.g.throttledWarn("ext_proc failed", "cluster", m.f.cluster, "failure_mode_allow", m.f.failureModeAllow, "error", err)
	}
	if m.f.failureModeAllow {
		return nil
	}
	return &localReply{status: http.StatusInternalServerError, details: "ext_proc_error"}
}

// processRequest is the ext_proc filter's request half: the headers (all of
// them, after ext_authz's mutations, with the pseudo-headers), then the
// whole body, each answer's mutations applied. True lets the request go on;
// false means a reply went out. Like the other filters it processes
// nothing without a route, or on a route that disables it.
func (p *pipeline) processRequest(ex *exchange) bool {
	f := p.cfg.listener.extProc
	if f == nil || ex.route == nil || ex.route.extProcOff[f.name] {
		return true
	}
	ctx, cancel := context.WithCancel(ex.r.Context())
	ex.meter = &meter{f: f, u: p.upstreams[f.cluster], ctx: ctx, cancel: cancel}
	eos := ex.body.empty()
	if f.requestHeaders {
		msg := &extprocsvcv3.ProcessingRequest{Request: &extprocsvcv3.ProcessingRequest_RequestHeaders{
			RequestHeaders: requestHeaders(ex, eos)}}
		if lr := p.step(ex, msg, func(r *extprocsvcv3.ProcessingResponse) error {
			if r.GetRequestHeaders() == nil {
				return fmt.Errorf("answer %T to request_headers", r.GetResponse())
			}
			return applyCommon(r.GetRequestHeaders().GetResponse(), ex.header, nil, nil)
		}); lr != nil {
			p.reply(ex, *lr)
			return false
		}
	}
	if !f.requestBody || eos || !ex.meter.active() {
		return true
	}
	// BUFFERED: the whole body, up to Envoy's per-connection buffer limit.
	if err := ex.body.fill(retryBufferLimit + 1); err != nil {
		ex.meter.close()
		p.bodyFailed(ex, err)
		return false
	}
	if len(ex.body.buf) > retryBufferLimit {
		ex.meter.close()
		p.reply(ex, localReply{status: http.StatusRequestEntityTooLarge, body: "Payload Too Large", details: "request_payload_too_large"})
		return false
	}
	msg := &extprocsvcv3.ProcessingRequest{Request: &extprocsvcv3.ProcessingRequest_RequestBody{
		RequestBody: &extprocsvcv3.HttpBody{Body: ex.body.buf, EndOfStream: true}}}
	if lr := p.step(ex, msg, func(r *extprocsvcv3.ProcessingResponse) error {
		br := r.GetRequestBody()
		if br == nil {
			return fmt.Errorf("answer %T to request_body", r.GetResponse())
		}
		return applyCommon(br.GetResponse(), ex.header, nil, func(b []byte) { ex.body.replace(b, ex.header) })
	}); lr != nil {
		p.reply(ex, *lr)
		return false
	}
	return true
}

// replace makes b the whole request body (a processor's body_mutation),
// declared upstream with its length; a content-length header among h is
// corrected too.
func (b *requestBody) replace(data []byte, h http.Header) {
	b.buf, b.rest, b.complete, b.length = data, nil, true, int64(len(data))
	if h.Get("Content-Length") != "" {
		h.Set("Content-Length", strconv.Itoa(len(data)))
	}
}

// requestHeaders is the request_headers message: the pseudo-headers, then
// every header (lower-case names, one entry per value, in name order),
// values as raw bytes as Envoy ≥ 1.27 sends them.
func requestHeaders(ex *exchange, eos bool) *extprocsvcv3.HttpHeaders {
	hm := &corev3.HeaderMap{}
	add := func(k, v string) { hm.Headers = append(hm.Headers, &corev3.HeaderValue{Key: k, RawValue: []byte(v)}) }
	add(":authority", ex.authority)
	add(":path", ex.path)
	add(":method", ex.r.Method)
	add(":scheme", "http")
	addHeaders(add, ex.header)
	return &extprocsvcv3.HttpHeaders{Headers: hm, EndOfStream: eos}
}

func addHeaders(add func(k, v string), h http.Header) {
	for _, k := range sortedKeys(h) {
		for _, v := range h[k] {
			add(strings.ToLower(k), v)
		}
	}
}

// applyCommon applies a CommonResponse: its header mutation to h (status,
// when not nil, takes a :status mutation), and its body mutation through
// body (nil: a headers answer, whose body mutation Envoy ignores).
// CONTINUE_AND_REPLACE is not implemented and fails the answer.
func applyCommon(cr *extprocsvcv3.CommonResponse, h http.Header, status *int, body func([]byte)) error {
	if cr.GetStatus() != extprocsvcv3.CommonResponse_CONTINUE {
		return fmt.Errorf("status %s is %w", cr.GetStatus(), errNotImplemented)
	}
	if err := applyHeaderMutation(cr.GetHeaderMutation(), h, status); err != nil {
		return err
	}
	bm := cr.GetBodyMutation()
	if bm == nil || body == nil {
		return nil
	}
	switch mut := bm.GetMutation().(type) {
	case *extprocsvcv3.BodyMutation_Body:
		body(mut.Body)
	case *extprocsvcv3.BodyMutation_ClearBody:
		if mut.ClearBody {
			body(nil)
		}
	default:
		return fmt.Errorf("body_mutation %T is %w", mut, errNotImplemented)
	}
	return nil
}

// applyHeaderMutation removes, then sets headers as Envoy's default
// mutation rules allow: never a pseudo-header (but :status on a response,
// when status is not nil), host or x-envoy-* (ignored, as Envoy ignores a
// disallowed mutation). Values come from raw_value, else value. A name or
// value that is not a valid header fails the whole answer, unapplied.
func applyHeaderMutation(hm *extprocsvcv3.HeaderMutation, h http.Header, status *int) error {
	var ops []headerOp
	newStatus := 0
	for _, o := range hm.GetSetHeaders() {
		k, v := strings.ToLower(o.GetHeader().GetKey()), o.GetHeader().GetValue()
		if raw := o.GetHeader().GetRawValue(); len(raw) > 0 {
			v = string(raw)
		}
		if k == ":status" && status != nil {
			code, err := strconv.Atoi(v)
			if err != nil || code < 200 || code > 599 {
				return fmt.Errorf(":status %q: not a final HTTP status", v)
			}
			newStatus = code
			continue
		}
		if protectedHeader(k) {
			continue
		}
		if !httpguts.ValidHeaderFieldName(k) || !httpguts.ValidHeaderFieldValue(v) {
			return fmt.Errorf("header %q: not a valid header", k)
		}
		op := headerOpOf(o, false)
		op.key, op.value = k, v
		ops = append(ops, op)
	}
	for _, k := range hm.GetRemoveHeaders() {
		if !protectedHeader(strings.ToLower(k)) {
			h.Del(k)
		}
	}
	applyOps(h, ops)
	if newStatus != 0 {
		*status = newStatus
	}
	return nil
}

// protectedHeader is a (lower-case) name Envoy's default header mutation
// rules keep from an external processor.
func protectedHeader(k string) bool {
	return strings.HasPrefix(k, ":") || k == "host" || strings.HasPrefix(k, "x-envoy-")
}

// immediateReply is a processor's ImmediateResponse as a local reply: its
// status (200 when unset), headers and body, and its details.
func immediateReply(ir *extprocsvcv3.ImmediateResponse) (localReply, error) {
	lr := localReply{status: http.StatusOK, header: http.Header{}, body: string(ir.GetBody()), details: "ext_proc_immediate_response"}
	if s := ir.GetStatus(); s != nil {
		code, err := httpStatus(s.GetCode())
		if err != nil || code < 200 {
			return localReply{}, fmt.Errorf("immediate_response.status %d: not a final HTTP status", s.GetCode())
		}
		lr.status = code
	}
	if err := applyHeaderMutation(ir.GetHeaders(), lr.header, nil); err != nil {
		return localReply{}, fmt.Errorf("immediate_response.headers: %w", err)
	}
	if d := ir.GetDetails(); d != "" && !strings.ContainsAny(d, " \t\r\n") {
		lr.details = d
	}
	return lr, nil
}
