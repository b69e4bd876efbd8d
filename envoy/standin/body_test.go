package standin

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/leakytokens/leaky/controlplane/model"
)

// A body that cannot be read (a malformed chunk) is Envoy's codec error:
// 400 "Bad Request" (http1.codec_error), whether ext_authz or the router
// was reading it, and nothing goes upstream.
func TestMalformedBodyIs400(t *testing.T) {
	f := defaultFixture()
	f.maxBody = 16 // ext_authz reads 17 bytes; the router reads the rest for a retry
	h, rec := providerHarness(t, f)
	for _, tc := range []struct{ name, chunks string }{
		{"while ext_authz reads", "zz\r\n"},
		{"while the router reads", "20\r\n" + strings.Repeat("a", 32) + "\r\nzz\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := h.raw("POST /openai/v1/chat/completions HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\n\r\n" + tc.chunks)
			if want := jsonReply("http1.codec_error", "Bad Request", 400); resp.StatusCode != http.StatusBadRequest || body != want {
				t.Errorf("answer = %d %q, want 400 %q", resp.StatusCode, body, want)
			}
		})
	}
	if n := len(rec.requests()); n != 0 {
		t.Errorf("the upstream got %d requests, want 0", n)
	}
}

// shortIdle makes the stream idle timeout short enough for a test.
func shortIdle(d time.Duration) func(*Gateway) {
	return func(g *Gateway) { g.streamIdle = d }
}

// A client that sends the headers and then stops the body gets Envoy's
// stream idle timeout, 408 "stream timeout", whether ext_authz was reading
// the body or the router was streaming it upstream.
func TestStalledRequestBodyTimesOut(t *testing.T) {
	openai, authzHTTP := newRecorder(t), newRecorder(t)
	f := defaultFixture()
	f.endpoints[model.ProviderService("openai")] = []string{openai.addr()}
	f.endpoints[model.ServiceAuthzHTTP] = []string{authzHTTP.addr()}
	h := newHarnessWith(t, f, shortIdle(300*time.Millisecond))
	h.pushAndWait("v1", h.fix, nil)
	for _, path := range []string{"/openai/v1/chat/completions", "/api/v1/auth/login"} {
		resp, body := h.raw("POST " + path + " HTTP/1.1\r\nHost: gw\r\nContent-Length: 100\r\n\r\n{\"model\":")
		if want := jsonReply("stream_idle_timeout", bodyStreamTimeout, 408); resp.StatusCode != http.StatusRequestTimeout || body != want {
			t.Errorf("POST %s: answer = %d %q, want 408 %q", path, resp.StatusCode, body, want)
		}
	}
	if n := len(openai.requests()); n != 0 {
		t.Errorf("the provider got %d requests, want 0 (ext_authz reads the body first)", n)
	}
}

// A client that stops reading the response is let go after the idle
// timeout: the gateway gives up the upstream response, whose writer sees
// its connection close.
func TestStalledResponseReaderTimesOut(t *testing.T) {
	rec := newRecorder(t)
	f := defaultFixture()
	f.upstreamTimeout = 2 * waitBound // only the idle timeout may end it
	f.endpoints[model.ProviderService("openai")] = []string{rec.addr()}
	h := newHarnessWith(t, f, shortIdle(300*time.Millisecond))
	h.pushAndWait("v1", h.fix, nil)
	upstreamDone := make(chan struct{})
	rec.setHandler(func(w http.ResponseWriter, _ *http.Request) {
		defer close(upstreamDone)
		chunk := []byte(strings.Repeat("x", 32<<10))
		for {
			if _, err := w.Write(chunk); err != nil {
				return
			}
			w.(http.Flusher).Flush()
		}
	})
	conn, err := net.Dial("tcp", h.gw.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.(*net.TCPConn).SetReadBuffer(4 << 10)
	io.WriteString(conn, "GET /openai/v1/models HTTP/1.1\r\nHost: gw\r\n\r\n")
	select { // the client reads nothing
	case <-upstreamDone:
	case <-time.After(waitBound):
		t.Fatal("the upstream response was still being written after waitBound")
	}
}

// A response that keeps flowing is not cut, however long it lasts, and
// neither is a request whose body ended long before its response does.
func TestFlowingStreamOutlivesTheIdleTimeout(t *testing.T) {
	const idle, events = 500 * time.Millisecond, 20 // the stream lasts ≥ 4 × idle
	rec := newRecorder(t)
	f := defaultFixture()
	f.endpoints[model.ProviderService("openai")] = []string{rec.addr()}
	h := newHarnessWith(t, f, shortIdle(idle))
	h.pushAndWait("v1", h.fix, nil)
	rec.setHandler(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		for range events {
			io.WriteString(w, "data: tick\n\n")
			w.(http.Flusher).Flush()
			time.Sleep(idle / 5)
		}
	})
	resp, err := h.client.Post(h.base+"/openai/v1/chat/completions", "application/json", strings.NewReader(`{"stream":true}`))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	n := 0
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if sc.Text() == "data: tick" {
			n++
		}
	}
	if err := sc.Err(); err != nil || n != events {
		t.Errorf("got %d events (%v), want %d", n, err, events)
	}
}
