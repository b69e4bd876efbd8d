package estimate

import (
	"strings"
	"testing"
)

const (
	chatPath   = "/openai/v1/chat/completions"
	geminiPath = "/gemini/v1beta/models/gemini-2.0-flash:generateContent"
)

// Each want is written as ceil(B/4) + N + completion×choices, B the
// decoded bytes of the body's names and strings, N its numbers at
// ceil(characters/3) each.
func TestEstimate(t *testing.T) {
	x4000 := strings.Repeat("x", 4000)
	tests := []struct {
		name, path, body string
		want             int64
		provider         string
		ok               bool
	}{
		{"empty", chatPath, "", 0, "", false},
		{"white space only", chatPath, " \n", 0, "", false},
		{"chat", chatPath, `{"model":"gpt","messages":[{"role":"user","content":"12345678"}],"max_tokens":100}`, 13 + 1 + 100, "", true},
		{"escaped content name", chatPath, `{"messages":[{"role":"user","c\u006fntent":"` + strings.Repeat("x", 40000) + `"}],"max_tokens":1}`, 10009 + 1 + 1, "", true},
		{"escaped max_tokens beside max_tokens", chatPath, `{"messages":[{"role":"user","content":"hi"}],"max\u005ftokens":100000,"max_tokens":1}`, 12 + 3 + 100000, "", true},
		{"duplicate max_tokens: the larger", chatPath, `{"max_tokens":500,"max_tokens":1}`, 5 + 2 + 500, "", true},
		{"null max_tokens: the default", chatPath, `{"max_tokens":5,"max_tokens":null}`, 5 + 1 + 1000, "", true},
		{"max_completion_tokens and max_tokens: the larger", chatPath, `{"max_tokens":5,"max_completion_tokens":50}`, 8 + 2 + 50, "", true},
		{"n multiplies the completion", chatPath, `{"max_tokens":10,"n":3}`, 3 + 2 + 30, "", true},
		{"limit as a string", chatPath, `{"max_tokens":"100"}`, 4 + 100, "", true},
		{"fractional limit rounded up", chatPath, `{"max_tokens":1.5}`, 3 + 1 + 2, "", true},
		{"negative limit: the default", chatPath, `{"max_tokens":-5}`, 3 + 1 + 1000, "", true},
		{"huge limit clamped", chatPath, `{"max_tokens":1e30}`, maxEstimate, "", true},
		{"nested max_tokens not read", chatPath, `{"metadata":{"max_tokens":1}}`, 5 + 1 + 1000, "", true},
		{"tool description and parameters", chatPath, `{"tools":[{"function":{"description":"` + x4000 + `"}}],"max_tokens":1}`, 1009 + 1 + 1, "", true},
		{"tool call arguments", chatPath, `{"messages":[{"tool_calls":[{"function":{"arguments":"` + x4000 + `"}}]}],"max_tokens":1}`, 1012 + 1 + 1, "", true},
		{"seed tokens not read off the token API", chatPath, `{"tokens":5000,"max_tokens":1}`, 4 + 3 + 1, "", true},
		{"non-ASCII counted in UTF-8 bytes", chatPath, `{"content":"€€€"}`, 4 + 1000, "", true},
		{"escaped non-ASCII", chatPath, `{"content":"\u20ac\u20ac\u20ac"}`, 4 + 1000, "", true},
		{"white space", chatPath, "{ \"max_tokens\" : 10 }\n", 3 + 1 + 10, "", true},
		{"top-level array", chatPath, `[1,2,3]`, 3 + 1000, "", true},
		{"gemini", geminiPath, `{"contents":[{"parts":[{"text":"12345678"}]}],"generationConfig":{"maxOutputTokens":64}}`, 14 + 1 + 64, "", true},
		{"gemini proto names", geminiPath, `{"generation_config":{"max_output_tokens":60000}}`, 9 + 2 + 60000, "", true},
		{"gemini mixed names", geminiPath, `{"generationConfig":{"max_output_tokens":7}}`, 9 + 1 + 7, "", true},
		{"gemini config repeated without a limit", geminiPath, `{"generationConfig":{"maxOutputTokens":1},"generationConfig":{}}`, 12 + 1 + 1000, "", true},
		{"gemini config not an object", geminiPath, `{"generationConfig":null}`, 4 + 1000, "", true},
		{"gemini candidate count", geminiPath, `{"generationConfig":{"maxOutputTokens":10,"candidate_count":4}}`, 12 + 2 + 40, "", true},
		{"gemini limit outside generationConfig", geminiPath, `{"maxOutputTokens":1}`, 4 + 1 + 1000, "", true},
		{"gemini generationConfig not at the top", geminiPath, `{"x":{"generationConfig":{"maxOutputTokens":1}}}`, 8 + 1 + 1000, "", true},
		{"responses", "/openai/v1/responses", `{"input":"` + x4000 + `","max_output_tokens":16}`, 1006 + 1 + 16, "", true},
		{"responses without a limit", "/openai/v1/responses", `{"input":[{"content":"1234"}]}`, 4 + 1000, "", true},
		{"responses ignores max_tokens", "/openai/v1/responses", `{"input":"1234","max_tokens":1}`, 5 + 1 + 1000, "", true},
		{"embeddings", "/openai/v1/embeddings", `{"input":"` + x4000 + `"}`, 1002, "", true},
		{"embeddings of token ids", "/openai/v1/embeddings", `{"input":[[1,2,3,4,5,6,7,8]]}`, 2 + 8, "", true},
		{"gemini embedContent", "/gemini/v1beta/models/x:embedContent", `{"content":{"parts":[{"text":"12345678"}]}}`, 6, "", true},
		{"legacy completions", "/openai/v1/completions", `{"prompt":"1234","max_tokens":5,"best_of":3,"n":2}`, 7 + 3 + 15, "", true},
		{"seed tokens", "/api/v1/tokens/consume", `{"userId":"u","provider":"openai","tokens":250,"prompt":"hello"}`, 250, "openai", true},
		{"seed tokens, one unreadable", "/api/v1/tokens/consume", `{"tokens":-1,"tokens":300}`, 3 + 2 + 1000, "", true},
		{"seed huge tokens clamped", "/api/v1/tokens/consume", `{"tokens":99999999999999}`, maxEstimate, "", true},
		{"unknown API: any limit name", "/custom/v1/x", `{"prompt":"` + x4000 + `","parameters":{"max_new_tokens":5000}}`, 1008 + 2 + 5000, "", true},
		{"unknown API: never below the default", "/custom/v1/x", `{"max_tokens":1}`, 3 + 1 + 1000, "", true},
		{"provider", chatPath, `{"provider":"gemini"}`, 4 + 1000, "gemini", true},
		{"escaped provider", chatPath, `{"provider":"gem\u0069ni"}`, 4 + 1000, "gemini", true},
		{"nested provider not taken", chatPath, `{"meta":{"provider":"openai"}}`, 5 + 1000, "", true},
		{"not json", chatPath, strings.Repeat("x", 40), 10 + 1000, "", true},
		{"trailing garbage", chatPath, `{"tokens":5} x`, 4 + 1000, "", true},
		{"leading zero: not JSON, by size", chatPath, `{"max_tokens":01}`, 5 + 1000, "", true},
		{"invalid escape", chatPath, `{"a":"\q"}`, 3 + 1000, "", true},
		{"control character", chatPath, "{\"a\":\"\x01\"}", 3 + 1000, "", true},
		// Past 64 levels, one token a byte of the deeper value.
		{"too deep", chatPath, strings.Repeat("[", 100) + strings.Repeat("]", 100), 72 + 1000, "", true},
		{"truncated json", chatPath, `{"messages":[{"content":"12345`, 8 + 1000, "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, prov, ok := Body(tt.path, []byte(tt.body), 1000)
			if got != tt.want || prov != tt.provider || ok != tt.ok {
				t.Errorf("Body(%s) = %d, %q, %v, want %d, %q, %v", tt.name, got, prov, ok, tt.want, tt.provider, tt.ok)
			}
		})
	}
}

func TestAPIOf(t *testing.T) {
	tests := []struct {
		path string
		want api
	}{
		{"/openai/v1/chat/completions", apiChat},
		{"/qwen/compatible-mode/v1/chat/completions", apiChat},
		{"/api/v1/openai/chat/completions", apiChat},
		{"/openai/v1/completions", apiCompletions},
		{"/openai/v1/responses", apiResponses},
		{"/openai/v1/embeddings", apiEmbeddings},
		{"/gemini/v1beta/models/gemini-pro:generateContent", apiGemini},
		{"/gemini/v1beta/models/gemini-pro:streamGenerateContent", apiGemini},
		{"/gemini/v1beta/models/e:batchEmbedContents", apiEmbeddings},
		{"/api/v1/tokens/consume", apiSeed},
		{"/gemini/v1beta/models/x:other", apiOther},
		{"/openai/v1/chat/completions/x", apiOther},
		{"/", apiOther},
	}
	for _, tt := range tests {
		if got := apiOf(tt.path); got != tt.want {
			t.Errorf("apiOf(%q) = %d, want %d", tt.path, got, tt.want)
		}
	}
}

// TestEstimateReadsWhatTheProviderReads: bodies the estimate once costed
// far below what a provider's parser reads from them (security review of
// issue 7), each at least the completion the provider may produce.
func TestEstimateReadsWhatTheProviderReads(t *testing.T) {
	limits := `"max_tokens":100000,"n":8`
	deep := strings.Repeat(`{"a":`, 100) + `1` + strings.Repeat(`}`, 100)
	batch := func(entry string, n int) string { return strings.TrimSuffix(strings.Repeat(entry+",", n), ",") }
	digits := strings.Repeat("7", 4000)
	tests := []struct {
		name, path, body string
		atLeast          int64
	}{
		{"byte order mark", chatPath, "\xef\xbb\xbf" + `{"messages":[{"role":"user","content":"hi"}],` + limits + `}`, 800_000},
		{"byte order mark and space", chatPath, "\xef\xbb\xbf \n" + `{` + limits + `}`, 800_000},
		{"nested deeper than 64 levels", chatPath, `{"tools":[{"type":"function","function":{"name":"f","parameters":` + deep + `}}],` + limits + `}`, 800_000},
		{"NaN a lenient parser reads", chatPath, `{"temperature":NaN,` + limits + `}`, 800_000},
		{"control character in a string", chatPath, "{\"messages\":[{\"content\":\"a\x01b\"}]," + limits + "}", 800_000},
		{"limit after an invalid escape", "/custom/v1/x", `{"prompt":"\q",` + limits + `}`, 800_000},
		{"trailing garbage", chatPath, `{` + limits + `} x`, 800_000},
		{"prompt batch of strings", "/openai/v1/completions", `{"prompt":[` + batch(`"hi"`, 2048) + `],"max_tokens":4000}`, 2048 * 4000},
		{"prompt batch of token arrays", "/openai/v1/completions", `{"prompt":[` + batch(`[1,2]`, 2048) + `],"max_tokens":4000,"n":2}`, 2 * 2048 * 4000},
		{"prompt batch, not JSON", "/openai/v1/completions", `{"prompt":[` + batch(`"hi"`, 100) + `],"max_tokens":4000,}`, 100 * 4000},
		{"batchGenerateContent adds up", "/gemini/v1beta/models/g:batchGenerateContent",
			`{"requests":[` + batch(`{"contents":[{"parts":[{"text":"hi"}]}],"generationConfig":{"maxOutputTokens":8000}}`, 50) + `]}`, 400_000},
		{"n on an unknown path", "/custom/v1/x", `{"max_tokens":4000,"n":64}`, 256_000},
		{"candidateCount nested on an unknown path", "/custom/v1/x", `{"config":{"maxOutputTokens":4000,"candidateCount":8}}`, 32_000},
		{"long numbers", "/openai/v1/embeddings", `{"input":"x","schema":{"enum":[` + digits + `,` + digits + `]}}`, 2 * 4000 / 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got, _, _ := Body(tt.path, []byte(tt.body), 1000); got < tt.atLeast {
				t.Errorf("Body(%s) = %d, want at least %d", tt.name, got, tt.atLeast)
			}
		})
	}
}
