package authz

import (
	"encoding/json"
	"strconv"
	"strings"
	"testing"

	"github.com/leakytokens/leaky/internal/contract"
	"github.com/leakytokens/leaky/internal/serve"
)

// Check estimates the body as the provider will read it, whatever the
// spelling, and refuses a body Envoy truncated without a content-length.
func TestCheckEstimate(t *testing.T) {
	ts := startService(t, nil, nil)
	u := ts.register(t, "estimator")
	auth := map[string]string{"authorization": "Bearer " + u.Token}
	long := strings.Repeat("x", 40000)
	tests := []struct {
		name, path, body string
		atLeast          int64
	}{
		{"escaped content", "/openai/v1/chat/completions", `{"messages":[{"role":"user","c\u006fntent":"` + long + `"}],"max_tokens":1}`, 10000},
		{"escaped max_tokens", "/openai/v1/chat/completions", `{"messages":[{"role":"user","content":"hi"}],"max\u005ftokens":100000,"max_tokens":1}`, 100000},
		{"gemini proto names", "/gemini/v1beta/models/x:generateContent", `{"contents":[{"parts":[{"text":"hi"}]}],"generation_config":{"max_output_tokens":60000}}`, 60000},
		{"tool description", "/openai/v1/chat/completions", `{"messages":[],"tools":[{"type":"function","function":{"name":"f","description":"` + long + `"}}],"max_tokens":1}`, 10000},
		{"tool call arguments", "/openai/v1/chat/completions", `{"messages":[{"role":"assistant","tool_calls":[{"function":{"name":"f","arguments":"` + long + `"}}]}],"max_tokens":1}`, 10000},
		{"responses", "/openai/v1/responses", `{"model":"gpt-4o","input":"` + long + `","max_output_tokens":5000}`, 15000},
		{"embeddings", "/openai/v1/embeddings", `{"model":"e","input":["` + long + `"]}`, 10000},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := ts.check(t, tt.path, auth, tt.body)
			got, err := strconv.ParseInt(okHeaders(resp)[contract.HeaderEstimate], 10, 64)
			if err != nil || got < tt.atLeast {
				t.Errorf("Check(%s) estimate = %q, want at least %d", tt.name, okHeaders(resp)[contract.HeaderEstimate], tt.atLeast)
			}
		})
	}

	partial := map[string]string{"authorization": "Bearer " + u.Token, "x-envoy-auth-partial-body": "true"}
	resp := ts.check(t, "/openai/v1/chat/completions", partial, `{"messages":[{"role":"user","content":"`+long[:1000])
	var body serve.ErrorBody
	if err := json.Unmarshal([]byte(resp.GetDeniedResponse().GetBody()), &body); err != nil || deniedStatus(resp) != 411 || body.Error != "length_required" {
		t.Errorf("Check(truncated, no content-length) = %d %q, want 411 length_required", deniedStatus(resp), resp.GetDeniedResponse().GetBody())
	}
}
