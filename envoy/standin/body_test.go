package standin

import (
	"net/http"
	"strings"
	"testing"
)

// A body that cannot be read (a malformed chunk) is Envoy's codec error:
// 400 "Bad Request", whether ext_authz or the router was reading it, and
// nothing goes upstream.
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
			if resp.StatusCode != http.StatusBadRequest || body != "Bad Request" {
				t.Errorf("answer = %d %q, want 400 %q", resp.StatusCode, body, "Bad Request")
			}
		})
	}
	if n := len(rec.requests()); n != 0 {
		t.Errorf("the upstream got %d requests, want 0", n)
	}
}
