package authz

import (
	"encoding/json"
	"io"
	"net/http"
	"testing"

	"github.com/leakytokens/leaky/internal/serve"
)

// The mux's own 404 and 405 answers carry the JSON envelope too.
func TestUnmatchedRoutesAnswerJSON(t *testing.T) {
	ts := startService(t, nil, nil)
	tests := []struct {
		name, method, path string
		status             int
		code, allow        string
	}{
		{"unknown path", "GET", "/nope", 404, "not_found", ""},
		{"unknown api path", "POST", "/api/v1/auth/nope", 404, "not_found", ""},
		{"wrong method", "GET", "/api/v1/auth/login", 405, "method_not_allowed", "POST"},
		{"wrong method oauth2", "GET", "/oauth2/token", 405, "method_not_allowed", "POST"},
		{"wrong method with two allowed", "PUT", "/api/v1/auth/api-keys", 405, "method_not_allowed", "DELETE, GET, HEAD, POST"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, _ := http.NewRequest(tt.method, ts.base+tt.path, nil)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			data, _ := io.ReadAll(resp.Body)
			var body serve.ErrorBody
			if err := json.Unmarshal(data, &body); resp.StatusCode != tt.status || err != nil || body.Error != tt.code || body.Message == "" {
				t.Errorf("%s %s = %d %q, want %d with error %q", tt.method, tt.path, resp.StatusCode, data, tt.status, tt.code)
			}
			if got := resp.Header.Get("Content-Type"); got != "application/json" {
				t.Errorf("%s %s Content-Type = %q, want application/json", tt.method, tt.path, got)
			}
			if got := resp.Header.Get("Allow"); got != tt.allow {
				t.Errorf("%s %s Allow = %q, want %q", tt.method, tt.path, got, tt.allow)
			}
		})
	}
}
