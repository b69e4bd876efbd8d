package providersstub

import (
	"encoding/json"
	"io"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestGenerateContent(t *testing.T) {
	st := start(t, nil)
	// Texts: "Be brief." (9 bytes: 3), "Hi" (1), "abcdefgh" (2): 6 tokens.
	const contents = `"contents":[{"role":"user","parts":[{"text":"Hi"},{"inlineData":{"mimeType":"image/png","data":""}}]},{"role":"model","parts":[{"text":"abcdefgh"}]}]`
	for _, tc := range []struct {
		name, path, body string
		words            int
		finish           string
	}{
		{"v1beta", "/v1beta/models/gemini-2.0-flash:generateContent",
			`{"systemInstruction":{"parts":[{"text":"Be brief."}]},` + contents + `}`, 32, "STOP"},
		{"v1 and maxOutputTokens", "/v1/models/gemini-2.0-flash:generateContent",
			`{"systemInstruction":{"parts":[{"text":"Be brief."}]},` + contents + `,"generationConfig":{"maxOutputTokens":5,"temperature":1}}`, 5, "MAX_TOKENS"},
		{"snake case", "/v1beta/models/gemini-2.0-flash:generateContent",
			`{"system_instruction":{"parts":[{"text":"Be brief."}]},` + contents + `,"generation_config":{"max_output_tokens":2}}`, 2, "MAX_TOKENS"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := post(t, st.url(Gemini, tc.path), tc.body)
			var got geminiResponse
			a.decodeInto(t, &got)
			if a.status != 200 || got.ModelVersion != "gemini-2.0-flash" || got.ResponseID == "" || len(got.Candidates) != 1 {
				t.Fatalf("answer %d %s", a.status, a.body)
			}
			c := got.Candidates[0]
			if len(c.Content.Parts) != 1 || c.Content.Role != "model" || c.FinishReason != tc.finish {
				t.Fatalf("candidate %+v, want one part from the model, finish %s", c, tc.finish)
			}
			text := c.Content.Parts[0].Text
			wordsOf(t, text, tc.words)
			want := &geminiUsage{PromptTokenCount: 6, CandidatesTokenCount: ceil4(len(text)), TotalTokenCount: 6 + ceil4(len(text))}
			if !cmp.Equal(got.UsageMetadata, want) || want.CandidatesTokenCount != int64(tc.words) {
				t.Errorf("usageMetadata %+v, want %+v", got.UsageMetadata, want)
			}
			if again := post(t, st.url(Gemini, tc.path), tc.body); !equalExceptIDs(t, a.body, again.body) {
				t.Errorf("same request, different answers:\n%s\n%s", a.body, again.body)
			}
		})
	}
}

// A stream is SSE with alt=sse and one JSON array without; either way
// every chunk carries usageMetadata with the candidates' tokens so far,
// the last one the whole usage and the finish reason, and the chunks' text
// is the unstreamed answer's.
func TestStreamGenerateContent(t *testing.T) {
	st := start(t, nil)
	const body = `{"contents":[{"parts":[{"text":"tell me"}]}],"generationConfig":{"maxOutputTokens":6}}`
	var whole geminiResponse
	post(t, st.url(Gemini, "/v1beta/models/g:generateContent"), body).decodeInto(t, &whole)
	for _, tc := range []struct{ name, query, ct string }{
		{"sse", "?alt=sse", "text/event-stream"},
		{"array", "", "application/json"},
		{"array alt=json", "?alt=json", "application/json"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := openStream(t, st.url(Gemini, "/v1beta/models/g:streamGenerateContent"+tc.query), body, tc.ct)
			var chunks []geminiResponse
			if tc.ct == "text/event-stream" {
				for _, c := range sseJSON(t, r, false) {
					chunks = append(chunks, remarshal[geminiResponse](t, c))
				}
			} else {
				raw, err := io.ReadAll(r)
				if err != nil || json.Unmarshal(raw, &chunks) != nil {
					t.Fatalf("array stream %s: %v", raw, err)
				}
			}
			if len(chunks) != 6 {
				t.Fatalf("%d chunks, want 6 (one per word)", len(chunks))
			}
			var text strings.Builder
			for i, c := range chunks {
				text.WriteString(c.Candidates[0].Content.Parts[0].Text)
				u := c.UsageMetadata
				if u == nil || u.PromptTokenCount != 2 || u.CandidatesTokenCount != ceil4(text.Len()) || u.TotalTokenCount != 2+ceil4(text.Len()) {
					t.Errorf("chunk %d usageMetadata %+v, want 2 prompt and %d so far", i, u, ceil4(text.Len()))
				}
				if finish := c.Candidates[0].FinishReason; (finish != "") != (i == len(chunks)-1) {
					t.Errorf("chunk %d finishReason %q", i, finish)
				}
			}
			last := chunks[len(chunks)-1]
			if text.String() != whole.Candidates[0].Content.Parts[0].Text || !cmp.Equal(last.UsageMetadata, whole.UsageMetadata) || last.Candidates[0].FinishReason != "MAX_TOKENS" {
				t.Errorf("stream %q ending %+v, want %q and %+v", text.String(), last, whole.Candidates[0].Content.Parts[0].Text, whole.UsageMetadata)
			}
		})
	}
}

// remarshal converts a decoded JSON value into a T.
func remarshal[T any](t *testing.T, v any) T {
	t.Helper()
	var out T
	b, _ := json.Marshal(v)
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatalf("%s: %v", b, err)
	}
	return out
}
