package standin

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"os"
	"sync/atomic"
	"time"
)

// Envoy's local-reply bodies for a body it could not read.
const (
	bodyBadRequest    = "Bad Request"    // a codec error
	bodyStreamTimeout = "stream timeout" // stream_idle_timeout
)

// retryBufferLimit is how much of a request body the router keeps for
// replaying it on a retry: Envoy's default per-connection buffer limit. A
// longer body is streamed and the request is not retried (as in Envoy).
const retryBufferLimit = 1 << 20

// requestBody is the downstream body: the part read so far and the rest,
// still in the connection. The filters read what they need of it (ext_authz
// up to its bound, the router up to retryBufferLimit); the router then
// sends the buffered part followed by the rest.
type requestBody struct {
	buf      []byte
	rest     io.Reader   // nil once everything is buffered
	complete bool        // buf is the whole body
	length   int64       // the declared length; -1 unknown
	consumed bool        // the rest was handed to an upstream request
	timedOut atomic.Bool // a read outlived the stream idle timeout
}

// newRequestBody is r's body under the stream idle timeout (Envoy's
// stream_idle_timeout): from now on, and again before every read, the
// connection's read deadline is idle ahead, so a client that stops sending
// its body holds the request for idle at most, even when nothing reads the
// body but the server's own discard of it. The deadline is lifted when the
// body ends: the server then reads the connection to notice the client
// going away, however long the response lasts.
func newRequestBody(r *http.Request, rc *http.ResponseController, idle time.Duration) *requestBody {
	b := &requestBody{length: r.ContentLength}
	if r.Body == nil || r.Body == http.NoBody || r.ContentLength == 0 {
		b.complete = true
		return b
	}
	_ = rc.SetReadDeadline(time.Now().Add(idle)) // not supported: no timeout
	b.rest = &idleReader{r: r.Body, rc: rc, idle: idle, timedOut: &b.timedOut}
	return b
}

// idleReader renews the read deadline before each read of the body until
// the body ends, then lifts it and leaves the connection's deadline alone.
type idleReader struct {
	r        io.Reader
	rc       *http.ResponseController
	idle     time.Duration
	timedOut *atomic.Bool
	ended    bool
}

func (ir *idleReader) Read(p []byte) (int, error) {
	if ir.ended {
		return ir.r.Read(p)
	}
	_ = ir.rc.SetReadDeadline(time.Now().Add(ir.idle))
	n, err := ir.r.Read(p)
	switch {
	case errors.Is(err, io.EOF):
		ir.ended = true
		_ = ir.rc.SetReadDeadline(time.Time{})
	case errors.Is(err, os.ErrDeadlineExceeded):
		ir.timedOut.Store(true)
	}
	return n, err
}

// empty reports whether the request has no body at all.
func (b *requestBody) empty() bool { return b.complete && len(b.buf) == 0 }

// fill reads until at least n bytes are buffered or the body ends. A read
// error is the client's (a reset or a short body).
func (b *requestBody) fill(n int) error {
	for !b.complete && len(b.buf) < n {
		if b.consumed {
			return errors.New("request body already streamed upstream")
		}
		chunk := make([]byte, min(n-len(b.buf), 32<<10))
		k, err := b.rest.Read(chunk)
		b.buf = append(b.buf, chunk[:k]...)
		switch {
		case errors.Is(err, io.EOF):
			b.rest, b.complete = nil, true
		case err != nil:
			return err
		}
	}
	return nil
}

// replayable reports whether the body can be sent more than once.
func (b *requestBody) replayable() bool { return b.complete }

// reader is the body for one upstream attempt: the buffer alone when it is
// complete, else the buffer followed by the rest (once only).
func (b *requestBody) reader() io.Reader {
	if b.complete {
		return bytes.NewReader(b.buf)
	}
	b.consumed = true
	return io.MultiReader(bytes.NewReader(b.buf), b.rest)
}

// contentLength is the length to declare upstream (-1: chunked).
func (b *requestBody) contentLength() int64 {
	if b.complete {
		return int64(len(b.buf))
	}
	return b.length
}

// bodyFailed answers a request whose body could not be read as Envoy
// does: 408 "stream timeout" when the client stopped sending it for the
// stream idle timeout, nothing when the client is gone (the request's
// context ended with the connection), else 400, the local reply to a codec
// error such as a malformed chunk.
func (p *pipeline) bodyFailed(ex *exchange, err error) {
	switch {
	case ex.body.timedOut.Load():
		p.reply(ex, streamTimeoutReply())
		return
	case ex.r.Context().Err() != nil:
		p.g.log.Debug("reading the request body: the client is gone", "error", err)
		return
	}
	p.g.log.Debug("reading the request body", "error", err)
	p.reply(ex, localReply{status: http.StatusBadRequest, body: bodyBadRequest, details: "http1.codec_error"})
}

// streamTimeoutReply is Envoy's answer when the stream idle timeout
// strikes while the client is still sending its body.
func streamTimeoutReply() localReply {
	return localReply{status: http.StatusRequestTimeout, body: bodyStreamTimeout,
		details: "stream_idle_timeout", flag: flagStreamIdleTimeout}
}
