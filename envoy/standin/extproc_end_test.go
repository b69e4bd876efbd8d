package standin

import (
	"io"
	"net/http"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/leakytokens/leaky/controlplane/model"
)

// How a processor's stream ends: after a local reply of the router's, a
// client abort, an upstream reset.

func TestExtProcSeesTheRoutersLocalReply(t *testing.T) {
	f := meterFixture(false)
	f.endpoints[model.ProviderService("openai")] = []string{} // no healthy upstream
	h := newHarness(t, f)
	h.pushAndWait("v1", h.fix, nil)
	if resp, _ := h.do("GET", "/openai/v1/models", nil, ""); resp.StatusCode != 503 {
		t.Fatalf("status = %d, want 503", resp.StatusCode)
	}
	want := []string{"request_headers eos=true", "response_headers :status=503 eos=false",
		`response_body "{\"error\":\"no_healthy_upstream\",\"message\":\"no healthy upstream\",\"status\":503}\n" eos=true`}
	if s := endedStreams(h, 1); !cmp.Equal(describeAll(s[0].got), want) || s[0].ended != "eof" {
		t.Errorf("messages = %q (ended %q), want %q", describeAll(s[0].got), s[0].ended, want)
	}
}

func TestExtProcStreamEndsWithAClientAbort(t *testing.T) {
	h, rec := providerHarness(t, meterFixture(false))
	release := make(chan struct{}, 1)
	sseUpstream(rec, []string{"data: 1\n\n", "data: never\n\n"}, make(chan struct{})) // the second never comes
	resp, body := h.stream("/openai/v1/chat/completions")
	readEvents(t, body, 1, release)
	resp.Body.Close() // the client goes away mid-stream
	if s := endedStreams(h, 1); s[0].ended != "cancelled" {
		t.Errorf("stream ended %q after %q, want cancelled", s[0].ended, describeAll(s[0].got))
	}
}

func TestExtProcStreamEndsWithAnUpstreamReset(t *testing.T) {
	h, rec := providerHarness(t, meterFixture(false))
	rec.setHandler(func(w http.ResponseWriter, _ *http.Request) {
		io.WriteString(w, "data: 1\n\n")
		w.(http.Flusher).Flush()
		panic(http.ErrAbortHandler) // the upstream resets mid-body
	})
	resp, body := h.stream("/openai/v1/chat/completions")
	readEvents(t, body, 1, make(chan struct{}, 1))
	if _, err := io.ReadAll(body); err == nil {
		t.Errorf("reading the rest of %d: no error, want the client's stream reset too", resp.StatusCode)
	}
	if s := endedStreams(h, 1); s[0].ended != "cancelled" {
		t.Errorf("stream ended %q after %q, want cancelled", s[0].ended, describeAll(s[0].got))
	}
}
