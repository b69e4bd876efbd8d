package standin

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocsvcv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
)

// errProcessorReset is a processor that failed (or answered with an
// immediate response) after the response headers went out, under
// failure_mode_allow false: the client's stream is reset.
var errProcessorReset = errors.New("ext_proc failed after the response headers were sent")

// processResponseHeaders sends the response headers (the upstream's, or a
// local reply's, with :status; eos when there is no body) and applies the
// answer to h and status. Nil lets the response go on; else the local
// reply to send instead (the processor's immediate response, or the 500 of
// a failure).
func (p *pipeline) processResponseHeaders(ex *exchange, status *int, h http.Header, eos bool) *localReply {
	if !ex.meter.active() || !ex.meter.f.responseHeaders {
		return nil
	}
	hm := &corev3.HeaderMap{}
	add := func(k, v string) { hm.Headers = append(hm.Headers, &corev3.HeaderValue{Key: k, RawValue: []byte(v)}) }
	add(":status", strconv.Itoa(*status))
	addHeaders(add, h)
	msg := &extprocsvcv3.ProcessingRequest{Request: &extprocsvcv3.ProcessingRequest_ResponseHeaders{
		ResponseHeaders: &extprocsvcv3.HttpHeaders{Headers: hm, EndOfStream: eos}}}
	return p.step(ex, msg, func(r *extprocsvcv3.ProcessingResponse) error {
		if r.GetResponseHeaders() == nil {
			return fmt.Errorf("answer %T to response_headers", r.GetResponse())
		}
		return applyCommon(r.GetResponseHeaders().GetResponse(), h, status, nil)
	})
}

// streamsBody reports whether the response body goes to the processor
// chunk by chunk (then its length may change, and is not declared).
func (m *meter) streamsBody() bool { return m.active() && m.f.responseBody }

// processChunk sends one response body chunk (eos: the last, possibly
// empty) and returns what the client gets instead: the chunk as it was,
// the processor's replacement, or nothing. When the processor is dropped
// under failure_mode_allow the chunk passes as it was; errProcessorReset
// means the stream must be reset.
func (p *pipeline) processChunk(ex *exchange, data []byte, eos bool) ([]byte, error) {
	if !ex.meter.streamsBody() {
		return data, nil
	}
	out := data
	msg := &extprocsvcv3.ProcessingRequest{Request: &extprocsvcv3.ProcessingRequest_ResponseBody{
		ResponseBody: &extprocsvcv3.HttpBody{Body: data, EndOfStream: eos}}}
	lr := p.step(ex, msg, func(r *extprocsvcv3.ProcessingResponse) error {
		if r.GetResponseBody() == nil {
			return fmt.Errorf("answer %T to response_body", r.GetResponse())
		}
		// The headers are gone: a header mutation is ignored (as Envoy does
		// once they were sent).
		return applyCommon(r.GetResponseBody().GetResponse(), http.Header{}, nil, func(b []byte) { out = b })
	})
	if lr != nil {
		return nil, errProcessorReset
	}
	return out, nil
}

// streamProcessed copies the response body as stream does, but passes
// every chunk through the processor first: each one is sent, and written
// and flushed to the client only once its answer came, so an event stream
// keeps flowing event by event. The end of the body is one more, empty,
// chunk with end_of_stream. A client that is gone ends the copy (the
// request's context, and with it the processor's stream, ends).
func (p *pipeline) streamProcessed(ex *exchange, body io.Reader) error {
	buf := make([]byte, 32<<10)
	for {
		n, err := body.Read(buf)
		if n > 0 {
			out, perr := p.processChunk(ex, buf[:n], false)
			if perr != nil {
				return perr
			}
			if !writeChunk(ex, out) {
				return nil
			}
		}
		if errors.Is(err, io.EOF) {
			out, perr := p.processChunk(ex, nil, true)
			if perr != nil {
				return perr
			}
			writeChunk(ex, out)
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// writeChunk writes and flushes data within the stream idle timeout; false
// means the client is gone or stalled.
func writeChunk(ex *exchange, data []byte) bool {
	if len(data) == 0 {
		return true
	}
	ex.extendWrite()
	if _, err := ex.w.Write(data); err != nil {
		return false
	}
	return ex.rc.Flush() == nil
}

// processLocalReply passes a local reply the router made (no healthy
// upstream, a timeout, a reset) through the processor, as Envoy's local
// replies pass the encoder filters: its headers, then its body as the one,
// last chunk. The processor may change both; a failure, or an immediate
// response, leaves the reply as it was (it is already the answer).
func (p *pipeline) processLocalReply(ex *exchange, status *int, h http.Header, body *string) {
	if !ex.meter.active() {
		return
	}
	if lr := p.processResponseHeaders(ex, status, h, *body == ""); lr != nil {
		ex.meter.close()
		return
	}
	if *body == "" {
		p.finishMeter(ex)
		return
	}
	out, err := p.processChunk(ex, []byte(*body), true)
	if err == nil {
		*body = string(out)
	}
	p.finishMeter(ex)
}

// finishMeter ends the request's processor stream after its last message.
func (p *pipeline) finishMeter(ex *exchange) {
	if ex.meter.finish() {
		p.g.metrics.extProc.WithLabelValues("completed").Inc()
	}
}
