package providersstub

import (
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// openAIErr and geminiErr are the providers' error shapes, decoded
// strictly: a member more or less fails the test.
type openAIErr struct {
	Error struct {
		Message string  `json:"message"`
		Type    string  `json:"type"`
		Param   *string `json:"param"`
		Code    *string `json:"code"`
	} `json:"error"`
}

type geminiErr struct {
	Error struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
		Status  string `json:"status"`
	} `json:"error"`
}

func strict(t *testing.T, body []byte, v any) {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		t.Fatalf("error body %s: %v", body, err)
	}
}

func TestMalformedOpenAIAndQwenRequestsGetOpenAIsErrors(t *testing.T) {
	st := start(t, func(c *Config) { c.MaxBodyBytes = 1 << 10 })
	big := `{"model":"m","messages":[{"role":"user","content":"` + strings.Repeat("x", 2<<10) + `"}]}`
	chat := "/v1/chat/completions"
	for _, tc := range []struct {
		name, provider, method, path, body string
		status                             int
		param, code                        string // OpenAI's; "" is null
	}{
		{"bad json", OpenAI, "POST", chat, `{"model":`, 400, "", ""},
		{"empty body", OpenAI, "POST", chat, ``, 400, "", ""},
		{"array body", OpenAI, "POST", chat, `[]`, 400, "", ""},
		{"null body", OpenAI, "POST", chat, `null`, 400, "model", ""},
		{"no model", OpenAI, "POST", chat, `{"messages":[{"role":"user","content":"x"}]}`, 400, "model", ""},
		{"no messages", OpenAI, "POST", chat, `{"model":"m"}`, 400, "messages", "missing_required_parameter"},
		{"empty messages", OpenAI, "POST", chat, `{"model":"m","messages":[]}`, 400, "messages", "empty_array"},
		{"messages not an array", OpenAI, "POST", chat, `{"model":"m","messages":{"role":"user"}}`, 400, "messages", "invalid_type"},
		{"no role", OpenAI, "POST", chat, `{"model":"m","messages":[{"content":"x"}]}`, 400, "messages[0].role", "missing_required_parameter"},
		{"content a number", OpenAI, "POST", chat, `{"model":"m","messages":[{"role":"user","content":5}]}`, 400, "messages[0].content", "invalid_type"},
		{"max_tokens 0", OpenAI, "POST", chat, `{"model":"m","messages":[{"role":"user","content":"x"}],"max_tokens":0}`, 400, "max_tokens", "integer_below_min_value"},
		{"max_tokens a string", OpenAI, "POST", chat, `{"model":"m","messages":[],"max_tokens":"5"}`, 400, "max_tokens", "invalid_type"},
		{"stream_options without stream", OpenAI, "POST", chat, `{"model":"m","messages":[{"role":"user","content":"x"}],"stream_options":{"include_usage":true}}`, 400, "stream_options", "invalid_value"},
		{"body too large", OpenAI, "POST", chat, big, 413, "", ""},
		{"wrong method", OpenAI, "GET", chat, ``, 405, "", ""},
		{"unknown path", OpenAI, "POST", "/v1/chat/completion", `{}`, 404, "", ""},
		{"completions without prompt", OpenAI, "POST", "/v1/completions", `{"model":"m"}`, 400, "prompt", "missing_required_parameter"},
		{"embeddings of nothing", OpenAI, "POST", "/v1/embeddings", `{"model":"m","input":[]}`, 400, "input", "invalid_type"},
		{"embeddings too wide", OpenAI, "POST", "/v1/embeddings", `{"model":"m","input":"x","dimensions":100000}`, 400, "dimensions", "invalid_value"},
		{"seed not an object", OpenAI, "POST", "/api/v1/openai/chat", `"hi"`, 400, "", ""},
		{"qwen without compatible-mode", Qwen, "POST", chat, `{}`, 404, "", ""},
		{"qwen bad json", Qwen, "POST", "/compatible-mode/v1/chat/completions", `{`, 400, "", ""},
		{"metrics by POST", Qwen, "POST", "/metrics", ``, 405, "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := do(t, tc.method, st.url(tc.provider, tc.path), tc.body)
			var got openAIErr
			strict(t, a.body, &got)
			wantType := "invalid_request_error"
			if a.status != tc.status || got.Error.Type != wantType || got.Error.Message == "" ||
				str(got.Error.Param) != tc.param || str(got.Error.Code) != tc.code {
				t.Errorf("answer %d %s, want %d type %s param %q code %q", a.status, a.body, tc.status, wantType, tc.param, tc.code)
			}
			if tc.status == 405 && a.header.Get("Allow") == "" {
				t.Error("405 without Allow")
			}
		})
	}
}

func TestMalformedGeminiRequestsGetGeminisErrors(t *testing.T) {
	st := start(t, func(c *Config) { c.MaxBodyBytes = 1 << 10 })
	gen := "/v1beta/models/g:generateContent"
	bigGemini := `{"contents":[{"parts":[{"text":"` + strings.Repeat("x", 2<<10) + `"}]}]}`
	for _, tc := range []struct {
		name, method, path, body string
		status                   int
		googleStatus             string
	}{
		{"bad json", "POST", gen, `{"contents":`, 400, "INVALID_ARGUMENT"},
		{"no contents", "POST", gen, `{}`, 400, "INVALID_ARGUMENT"},
		{"contents not an array", "POST", gen, `{"contents":{"parts":[]}}`, 400, "INVALID_ARGUMENT"},
		{"empty parts", "POST", gen, `{"contents":[{"parts":[]}]}`, 400, "INVALID_ARGUMENT"},
		{"maxOutputTokens 0", "POST", gen, `{"contents":[{"parts":[{"text":"x"}]}],"generationConfig":{"maxOutputTokens":0}}`, 400, "INVALID_ARGUMENT"},
		{"bad alt", "POST", "/v1beta/models/g:streamGenerateContent?alt=proto", `{"contents":[{"parts":[{"text":"x"}]}]}`, 400, "INVALID_ARGUMENT"},
		{"body too large", "POST", gen, bigGemini, 400, "INVALID_ARGUMENT"},
		{"unknown method", "POST", "/v1beta/models/g:countTokens", `{}`, 404, "NOT_FOUND"},
		{"no model", "POST", "/v1beta/models/:generateContent", `{}`, 404, "NOT_FOUND"},
		{"no method", "POST", "/v1beta/models/g", `{}`, 404, "NOT_FOUND"},
		{"openai path", "POST", "/v1/chat/completions", `{}`, 404, "NOT_FOUND"},
		{"wrong method", "GET", gen, ``, 405, "UNIMPLEMENTED"},
		{"healthz by POST", "POST", "/healthz", ``, 405, "UNIMPLEMENTED"},
	} {
		t.Run("gemini "+tc.name, func(t *testing.T) {
			a := do(t, tc.method, st.url(Gemini, tc.path), tc.body)
			var got geminiErr
			strict(t, a.body, &got)
			if a.status != tc.status || got.Error.Code != tc.status || got.Error.Status != tc.googleStatus || got.Error.Message == "" {
				t.Errorf("answer %d %s, want %d %s", a.status, a.body, tc.status, tc.googleStatus)
			}
		})
	}
}

// str is *p, or "" for nil.
func str(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}

// FuzzRequest: whatever the body, path and knob header, an answer is never
// a 5xx (no knob asks for one here) and never a panic, and an error is in
// the provider's shape.
func FuzzRequest(f *testing.F) {
	for _, seed := range []string{
		`{"model":"m","messages":[{"role":"user","content":"x"}],"stream":true,"stream_options":{"include_usage":true}}`,
		`{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"x"}]}],"max_tokens":3}`,
		`{"model":"m","prompt":["a","b"],"stream":true}`, `{"model":"m","input":[[1],[2,3]],"encoding_format":"base64"}`,
		`{"contents":[{"parts":[{"text":"x"}]}],"generation_config":{"max_output_tokens":2}}`,
		`{"prompt":"x","messages":[{"role":"user","content":null}]}`, `{`, `[]`, `null`, `{"messages":5}`,
	} {
		for path := range 6 {
			f.Add(seed, uint8(path), "x-stub-truncate", "2")
		}
	}
	cfg := DefaultConfig()
	cfg.OpenAIAddr, cfg.GeminiAddr, cfg.QwenAddr = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"
	s, err := New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		f.Fatal(err)
	}
	s.Close() // the handlers are called directly
	paths := []struct{ provider, path string }{
		{OpenAI, "/v1/chat/completions"}, {OpenAI, "/v1/completions"}, {OpenAI, "/v1/embeddings"},
		{Qwen, "/api/v1/qwen/chat"}, {Gemini, "/v1beta/models/g:generateContent"}, {Gemini, "/v1/models/g:streamGenerateContent?alt=sse"},
	}
	f.Fuzz(func(t *testing.T, body string, path uint8, header, value string) {
		p := paths[int(path)%len(paths)]
		switch strings.TrimPrefix(http.CanonicalHeaderKey(header), http.CanonicalHeaderKey(HeaderPrefix)) {
		case "Status", "Error-Rate", "Fail-First", "Latency", "Ttft", "Chunk-Delay":
			return // knobs that ask for a 5xx or for time
		}
		req := httptest.NewRequest(http.MethodPost, p.path, strings.NewReader(body))
		if header != "" && !strings.ContainsAny(header+value, "\r\n\x00") {
			req.Header.Set(header, value)
		}
		rec := httptest.NewRecorder()
		func() {
			defer func() {
				if v := recover(); v != nil && v != any(http.ErrAbortHandler) { // a truncated stream aborts
					t.Fatalf("panic: %v", v)
				}
			}()
			handler{s: s, p: providerOf(p.provider)}.ServeHTTP(rec, req)
		}()
		if rec.Code >= 500 {
			t.Fatalf("POST %s %q: %d %s", p.path, body, rec.Code, rec.Body)
		}
		if rec.Code >= 400 && !json.Valid(rec.Body.Bytes()) {
			t.Fatalf("POST %s %q: %d with a body that is not JSON: %s", p.path, body, rec.Code, rec.Body)
		}
	})
}
