package extauthz

import (
	"errors"
	"strconv"
	"strings"
	"testing"

	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
)

const chatPath = "/openai/v1/chat/completions"

// Envoy truncates a body larger than max_request_bytes when
// allow_partial_message is set: the estimate then follows content-length,
// not the bytes it saw, and without a content-length the request is refused.
func TestEstimateRequestPartialBody(t *testing.T) {
	full := `{"messages":[{"content":"` + strings.Repeat("x", 4000) + `"}],"max_tokens":10}`
	cut := full[:100]
	ids := `{"input":[[` + strings.Repeat("1,", 5000) + `1]]}`
	limitFirst := `{"max_tokens":50000,"messages":[{"content":"` + strings.Repeat("x", 4000) + `"}]}`
	cl := func(s string) string { return strconv.Itoa(len(s)) }
	tests := []struct {
		name, path, body string
		headers          map[string]string
		want             int64
	}{
		{"complete", chatPath, full, map[string]string{"content-length": cl(full)}, 1007 + 1 + 10},
		{"truncated", chatPath, cut, map[string]string{"content-length": cl(full), "x-envoy-auth-partial-body": "true"}, divUp(int64(len(full)), 4) + 1000},
		{"truncated, flag missing", chatPath, cut, map[string]string{"content-length": cl(full)}, divUp(int64(len(full)), 4) + 1000},
		{"forged partial flag on a complete body", chatPath, full, map[string]string{"content-length": cl(full), "x-envoy-auth-partial-body": "true"}, 1007 + 1 + 10},
		{"truncated: a limit seen counts", chatPath, limitFirst[:100], map[string]string{"content-length": cl(limitFirst)}, divUp(int64(len(limitFirst)), 4) + 50000},
		// 100 bytes kept: 5 bytes of names, 95 numbers, scaled to the length.
		{"truncated token ids: scaled, not by size", "/openai/v1/embeddings", ids[:200], map[string]string{"content-length": cl(ids)}, divUp((2+95)*int64(len(ids)), 200)},
		{"complete without a length", chatPath, full, map[string]string{"x-envoy-auth-partial-body": "false"}, 1007 + 1 + 10},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, _, _, err := estimateRequest(tt.path, []byte(tt.body), tt.headers, 1000)
			if got != tt.want || err != nil {
				t.Errorf("estimateRequest(%s) = %d, %v, want %d", tt.name, got, err, tt.want)
			}
		})
	}
}

func TestEstimateRequestTruncatedWithoutLength(t *testing.T) {
	body := `{"messages":[{"content":"` + strings.Repeat("x", 100)
	for _, h := range []map[string]string{
		{"x-envoy-auth-partial-body": "true"},
		{"x-envoy-auth-partial-body": "TRUE", "content-length": "chunked"},
	} {
		_, _, ok, err := estimateRequest(chatPath, []byte(body), h, 1000)
		var d *denial
		if !errors.As(err, &d) || d.status != typev3.StatusCode_LengthRequired || ok {
			t.Errorf("estimateRequest(partial, %v) = %v, %v, want a 411 denial", h, ok, err)
		}
	}
}

func TestEstimateRequestContentEncoding(t *testing.T) {
	body := []byte(`{"messages":[{"content":"hi"}],"max_tokens":10}`)
	for _, enc := range []string{"gzip", "br", "identity, gzip", "GZIP", "x-unknown"} {
		_, _, ok, err := estimateRequest(chatPath, body, map[string]string{"content-encoding": enc}, 1000)
		var d *denial
		if !errors.As(err, &d) || d.status != typev3.StatusCode_UnsupportedMediaType || ok {
			t.Errorf("estimateRequest(content-encoding %q) = %v, %v, want a 415 denial", enc, ok, err)
		}
	}
	for _, enc := range []string{"", "identity", " Identity "} {
		if _, _, ok, err := estimateRequest(chatPath, body, map[string]string{"content-encoding": enc}, 1000); !ok || err != nil {
			t.Errorf("estimateRequest(content-encoding %q) = %v, %v, want an estimate", enc, ok, err)
		}
	}
}

func divUp(a, b int64) int64 { return (a + b - 1) / b }
