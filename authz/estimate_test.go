package authz

import (
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
