package standin

import (
	"net/http"
	"testing"

	"github.com/google/uuid"
)

// Every request is an edge request (use_remote_address, and no address is
// internal): a fresh x-request-id replaces the client's, the client's
// address is appended to x-forwarded-for and set as
// x-envoy-external-address, and the x-envoy-* headers that steer the
// router are removed.
func TestEdgeRequestHeaders(t *testing.T) {
	h, rec := providerHarness(t, defaultFixture())
	sent := http.Header{
		"X-Request-Id":                   {"chosen-by-client"},
		"X-Forwarded-For":                {"203.0.113.9"},
		"X-Forwarded-Proto":              {"https"},
		"X-Envoy-Upstream-Rq-Timeout-Ms": {"1"},
		"X-Envoy-Retry-On":               {"5xx"},
		"X-Envoy-Internal":               {"true"},
		"X-Envoy-Decorator-Operation":    {"op"},
	}
	for range 2 {
		if resp, _ := h.do("GET", "/openai/v1/models", sent, ""); resp.StatusCode != 200 {
			t.Fatalf("status = %d, want 200", resp.StatusCode)
		}
	}
	up := rec.requests()
	if len(up) != 2 {
		t.Fatalf("upstream requests = %d, want 2", len(up))
	}
	ids := map[string]bool{}
	for _, r := range up {
		id := r.header.Get("X-Request-Id")
		if u, err := uuid.Parse(id); err != nil || u.Version() != 4 {
			t.Errorf("x-request-id = %q, want a fresh UUIDv4", id)
		}
		ids[id] = true
		for name, want := range map[string]string{"X-Forwarded-For": "203.0.113.9,127.0.0.1", "X-Envoy-External-Address": "127.0.0.1",
			"X-Forwarded-Proto": "http", "X-Envoy-Upstream-Rq-Timeout-Ms": "", "X-Envoy-Retry-On": "", "X-Envoy-Internal": "",
			"X-Envoy-Decorator-Operation": ""} {
			if got := r.header.Get(name); got != want {
				t.Errorf("upstream %s = %q, want %q", name, got, want)
			}
		}
	}
	if len(ids) != 2 {
		t.Errorf("request ids %v, want two different ones", ids)
	}
	// ext_authz saw the id the upstream got.
	if got := h.authz.requests()[1].GetAttributes().GetRequest().GetHttp().GetId(); got != up[1].header.Get("X-Request-Id") {
		t.Errorf("CheckRequest id = %q, want the upstream's %q", got, up[1].header.Get("X-Request-Id"))
	}
}
