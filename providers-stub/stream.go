package providersstub

import (
	"context"
	"net/http"
	"time"
)

// framing is how a stream separates its chunks.
type framing uint8

const (
	framingSSE   framing = iota // text/event-stream: "data: <json>\n\n" per chunk
	framingArray                // application/json: one JSON array, a chunk per element (Gemini without alt=sse)
)

// stream writes one streamed answer chunk by chunk, with the knobs' time to
// first token, delay between chunks and truncation.
type stream struct {
	w       http.ResponseWriter
	ctx     context.Context
	k       Knobs
	framing framing
	sent    int // chunks written
}

// startStream sends the answer's headers (status 200) at once.
func startStream(c *call, f framing) *stream {
	h := c.w.Header()
	if f == framingSSE {
		h.Set("Content-Type", "text/event-stream")
	} else {
		h.Set("Content-Type", "application/json")
	}
	h.Set("Cache-Control", "no-cache")
	c.w.WriteHeader(http.StatusOK)
	_ = http.NewResponseController(c.w).Flush()
	return &stream{w: c.w, ctx: c.r.Context(), k: c.k, framing: f}
}

// chunk sends v as the next chunk, after the time to first token or the
// delay between chunks. When the knobs truncate the stream before this
// chunk, or the request ends (the client left, the stop's grace ran out),
// it aborts the answer.
func (s *stream) chunk(v any) { s.raw(marshal(v)) }

// done sends OpenAI's "data: [DONE]" (one chunk).
func (s *stream) done() { s.raw([]byte("[DONE]")) }

// end closes a JSON array stream; an SSE stream just ends.
func (s *stream) end() {
	if s.framing != framingArray {
		return
	}
	if s.sent == 0 {
		_, _ = s.w.Write([]byte("["))
	}
	_, _ = s.w.Write([]byte("]\n"))
	_ = http.NewResponseController(s.w).Flush()
}

func (s *stream) raw(data []byte) {
	if s.k.Truncate > 0 && s.sent >= s.k.Truncate {
		abort()
	}
	delay := s.k.ChunkDelay
	if s.sent == 0 {
		delay = s.k.TTFT
	}
	if !sleep(s.ctx, delay) {
		abort()
	}
	var frame []byte
	switch {
	case s.framing == framingSSE:
		frame = append(append([]byte("data: "), data...), '\n', '\n')
	case s.sent == 0:
		frame = append([]byte("[\n"), data...)
	default:
		frame = append([]byte(",\n"), data...)
	}
	if _, err := s.w.Write(frame); err != nil {
		abort()
	}
	s.sent++
	if http.NewResponseController(s.w).Flush() != nil {
		abort()
	}
}

// abort ends an answer by cutting it (HTTP/1.1: the connection closes
// without the body's end; HTTP/2: the stream is reset), so the client sees
// it unfinished rather than complete. It is net/http's own way to do so: a
// panic with http.ErrAbortHandler, which the server neither logs nor
// answers; the deferred metrics and accounting of the handler still run.
func abort() { panic(http.ErrAbortHandler) }

// sleep waits d, or until ctx ends; it reports whether d passed.
func sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
