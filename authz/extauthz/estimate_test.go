package extauthz

import (
	"strconv"
	"strings"
	"testing"
)

func TestEstimate(t *testing.T) {
	tests := []struct {
		name     string
		body     string
		want     int64
		provider string
		ok       bool
	}{
		{"empty", "", 0, "", false},
		{"openai string content", `{"model":"gpt","messages":[{"role":"user","content":"12345678"}],"max_tokens":100}`, 2 + 4 + 100, "", true},
		{"openai max_completion_tokens wins", `{"messages":[{"content":"1234"}],"max_tokens":5,"max_completion_tokens":50}`, 1 + 4 + 50, "", true},
		{"openai parts", `{"messages":[{"content":[{"type":"text","text":"12345678"},{"type":"text","text":"1234"}]}],"max_tokens":0}`, 3 + 4, "", true},
		{"qwen no max_tokens uses default", `{"messages":[{"content":"hi"},{"content":"there"}]}`, 2 + 8 + 1000, "", true},
		{"gemini", `{"contents":[{"parts":[{"text":"12345678"},{"text":"1234"}]}],"generationConfig":{"maxOutputTokens":64}}`, 3 + 4 + 64, "", true},
		{"gemini system instruction", `{"systemInstruction":{"parts":[{"text":"1234"}]},"contents":[{"parts":[{"text":"1234"}]}],"generationConfig":{"maxOutputTokens":1}}`, 2 + 8 + 1, "", true},
		{"seed tokens", `{"userId":"u","provider":"openai","tokens":250,"prompt":"hello"}`, 250, "openai", true},
		{"seed huge tokens clamped", `{"tokens":99999999999999}`, maxEstimate, "", true},
		{"negative max_tokens ignored", `{"messages":[{"content":"1234"}],"max_tokens":-5}`, 1 + 4 + 1000, "", true},
		{"not json", strings.Repeat("x", 40), 10 + 1000, "", true},
		{"escapes and whitespace", "{ \"messages\" : [ { \"content\" : \"ab\\\"cd\" } ] ,\n \"max_tokens\" : 10 }", 2 + 4 + 10, "", true},
		{"tool calls and nulls ignored", `{"messages":[{"role":"assistant","content":null,"tool_calls":[{"id":"x"}]}],"max_tokens":1,"stream":true}`, 0 + 4 + 1, "", true},
		{"nested provider not taken", `{"meta":{"provider":"openai"},"tokens":3}`, 3, "", true},
		{"fractional max_tokens is huge", `{"messages":[],"max_tokens":1.5}`, maxEstimate, "", true},
		{"top-level array", `[1,2,3]`, 1000, "", true},
		{"trailing garbage", `{"tokens":5} x`, 4 + 1000, "", true},
		{"too deep", strings.Repeat("[", 100) + strings.Repeat("]", 100), 50 + 1000, "", true},
		{"truncated json", `{"messages":[{"content":"12345`, 8 + 1000, "", true},
		{"seed tokens below the chat estimate", `{"tokens":1,"messages":[{"content":"` + strings.Repeat("x", 400) + `"}],"max_tokens":100}`, 100 + 4 + 100, "", true},
		{"seed tokens above the chat estimate", `{"tokens":5000,"messages":[{"content":"1234"}],"max_tokens":10}`, 5000, "", true},
		{"seed tokens with empty contents", `{"tokens":1,"contents":[],"generationConfig":{"maxOutputTokens":64}}`, 64, "", true},
		{"nested max_tokens ignored", `{"messages":[{"content":"1234","max_tokens":1}],"metadata":{"max_tokens":1,"max_completion_tokens":1}}`, 1 + 4 + 1000, "", true},
		{"nested max_tokens after top-level", `{"max_tokens":500,"messages":[{"content":"1234"}],"x":{"max_tokens":1}}`, 1 + 4 + 500, "", true},
		{"maxOutputTokens outside generationConfig", `{"contents":[{"parts":[{"text":"1234"}]}],"maxOutputTokens":1}`, 1 + 4 + 1000, "", true},
		{"maxOutputTokens nested deeper", `{"contents":[{"parts":[{"text":"1234"}]}],"generationConfig":{"x":{"maxOutputTokens":1}}}`, 1 + 4 + 1000, "", true},
		{"generationConfig not at the top", `{"contents":[{"parts":[{"text":"1234"}]}],"x":{"generationConfig":{"maxOutputTokens":1}}}`, 1 + 4 + 1000, "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, prov, ok := estimate([]byte(tt.body), 1000)
			if got != tt.want || prov != tt.provider || ok != tt.ok {
				t.Errorf("estimate(%s) = %d, %q, %v, want %d, %q, %v", tt.name, got, prov, ok, tt.want, tt.provider, tt.ok)
			}
		})
	}
}

// Envoy truncates a body larger than max_request_bytes when
// allow_partial_message is set: the estimate then follows content-length,
// not the bytes it saw.
func TestEstimateRequestPartialBody(t *testing.T) {
	full := `{"messages":[{"content":"` + strings.Repeat("x", 4000) + `"}],"max_tokens":10}`
	cut := full[:100]
	tests := []struct {
		name    string
		body    string
		headers map[string]string
		want    int64
	}{
		{"complete", full, map[string]string{"content-length": strconv.Itoa(len(full))}, 1000 + 4 + 10},
		{"truncated", cut, map[string]string{"content-length": strconv.Itoa(len(full)), "x-envoy-auth-partial-body": "true"}, int64(len(full)+3)/4 + 1000},
		{"truncated, flag missing", cut, map[string]string{"content-length": strconv.Itoa(len(full))}, int64(len(full)+3)/4 + 1000},
		{"forged partial flag on a complete body", full, map[string]string{"content-length": strconv.Itoa(len(full)), "x-envoy-auth-partial-body": "true"}, 1000 + 4 + 10},
		{"truncated without content-length", cut, map[string]string{"x-envoy-auth-partial-body": "true"}, 25 + 1000},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got, _, _ := estimateRequest([]byte(tt.body), tt.headers, 1000); got != tt.want {
				t.Errorf("estimateRequest(%s) = %d, want %d", tt.name, got, tt.want)
			}
		})
	}
}
