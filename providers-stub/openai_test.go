package providersstub

import (
	"encoding/base64"
	"net/http"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// ceil4 is the counting rule written out again for the tests: ⌈n/4⌉.
func ceil4(n int) int64 { return int64((n + 3) / 4) }

// wordsOf checks that text is n of the stub's three-letter words and
// returns them.
func wordsOf(t *testing.T, text string, n int) []string {
	t.Helper()
	ws := strings.Split(text, " ")
	if len(ws) != n {
		t.Fatalf("text %q has %d words, want %d", text, len(ws), n)
	}
	for _, w := range ws {
		if len(w) != 3 || !strings.Contains(wordList, w+" ") {
			t.Fatalf("text %q: %q is not one of the words", text, w)
		}
	}
	return ws
}

func TestChatCompletion(t *testing.T) {
	st := start(t, nil)
	// Prompt texts: "You are terse." (14 bytes: 4), "Hello there" (11: 3),
	// "abcd" and "efghi" from parts (1 + 2; the image part has none): 10.
	const body = `{"model":"gpt-4o-mini","messages":[
		{"role":"system","content":"You are terse."},
		{"role":"user","content":"Hello there"},
		{"role":"assistant","content":null,"tool_calls":[]},
		{"role":"user","content":[{"type":"text","text":"abcd"},{"type":"image_url","image_url":{"url":"x"}},{"type":"text","text":"efghi"}]}],
		"temperature":0.2%s}`
	for _, tc := range []struct {
		name, limit   string
		words         int
		finish        string
		provider, url string
	}{
		{"default length", "", 32, "stop", OpenAI, "/v1/chat/completions"},
		{"max_tokens", `,"max_tokens":5`, 5, "length", OpenAI, "/v1/chat/completions"},
		{"max_completion_tokens wins", `,"max_tokens":5,"max_completion_tokens":7`, 7, "length", OpenAI, "/v1/chat/completions"},
		{"limit above the default", `,"max_tokens":4096`, 32, "stop", OpenAI, "/v1/chat/completions"},
		{"qwen compatible mode", `,"max_tokens":6`, 6, "length", Qwen, "/compatible-mode/v1/chat/completions"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := post(t, st.url(tc.provider, tc.url), strings.Replace(body, "%s", tc.limit, 1))
			var got chatCompletion
			a.decodeInto(t, &got)
			if a.status != http.StatusOK || a.header.Get("Content-Type") != "application/json" {
				t.Fatalf("status %d %q, want 200 JSON: %s", a.status, a.header.Get("Content-Type"), a.body)
			}
			if !strings.HasPrefix(got.ID, "chatcmpl-") || got.Object != "chat.completion" || got.Model != "gpt-4o-mini" || got.Created == 0 || len(got.Choices) != 1 {
				t.Fatalf("answer %s", a.body)
			}
			ch := got.Choices[0]
			wordsOf(t, ch.Message.Content, tc.words)
			if ch.Message.Role != "assistant" || ch.FinishReason != tc.finish {
				t.Errorf("choice = %+v, want role assistant, finish %s", ch, tc.finish)
			}
			want := &openAIUsage{PromptTokens: 10, CompletionTokens: ceil4(len(ch.Message.Content)), TotalTokens: 10 + ceil4(len(ch.Message.Content))}
			if !cmp.Equal(got.Usage, want) || want.CompletionTokens != int64(tc.words) {
				t.Errorf("usage = %+v, want %+v (%d tokens)", got.Usage, want, tc.words)
			}
			again := post(t, st.url(tc.provider, tc.url), strings.Replace(body, "%s", tc.limit, 1))
			if !equalExceptIDs(t, a.body, again.body) {
				t.Errorf("same request, different answers:\n%s\n%s", a.body, again.body)
			}
		})
	}
}

// The generated text is a function of the prompt: another prompt gives
// another text.
func TestChatTextFollowsThePrompt(t *testing.T) {
	st := start(t, nil)
	texts := map[string]bool{}
	for _, p := range []string{"a", "b", "c", "d"} {
		var got chatCompletion
		post(t, st.url(OpenAI, "/v1/chat/completions"), `{"model":"m","messages":[{"role":"user","content":"`+p+`"}]}`).decodeInto(t, &got)
		texts[got.Choices[0].Message.Content] = true
	}
	if len(texts) < 2 {
		t.Errorf("four prompts gave %d texts", len(texts))
	}
}

func TestChatStream(t *testing.T) {
	st := start(t, nil)
	const req = `{"model":"m","messages":[{"role":"user","content":"stream me"}],"max_tokens":4,"stream":true%s}`
	var whole chatCompletion
	post(t, st.url(OpenAI, "/v1/chat/completions"), `{"model":"m","messages":[{"role":"user","content":"stream me"}],"max_tokens":4}`).decodeInto(t, &whole)
	for _, tc := range []struct {
		name, opts string
		usage      bool
	}{
		{"without stream_options", "", false},
		{"include_usage false", `,"stream_options":{"include_usage":false}`, false},
		{"include_usage true", `,"stream_options":{"include_usage":true}`, true},
	} {
		for _, p := range []struct{ provider, path string }{{OpenAI, "/v1/chat/completions"}, {Qwen, "/compatible-mode/v1/chat/completions"}} {
			t.Run(tc.name+" "+p.provider, func(t *testing.T) {
				chunks := sseJSON(t, openStream(t, st.url(p.provider, p.path), strings.Replace(req, "%s", tc.opts, 1), "text/event-stream"), true)
				if tc.usage {
					last := chunks[len(chunks)-1]
					chunks = chunks[:len(chunks)-1]
					if !cmp.Equal(last["choices"], []any{}) || !cmp.Equal(last["usage"], map[string]any{"prompt_tokens": 3.0, "completion_tokens": 4.0, "total_tokens": 7.0}) {
						t.Errorf("last chunk = %v, want no choices and the usage", last)
					}
				}
				var text strings.Builder
				for i, c := range chunks {
					u, has := c["usage"]
					if has != tc.usage || u != nil {
						t.Errorf("chunk %d usage = %v (present %v), want present %v and null", i, u, has, tc.usage)
					}
					choice := c["choices"].([]any)[0].(map[string]any)
					delta := choice["delta"].(map[string]any)
					if s, ok := delta["content"].(string); ok {
						text.WriteString(s)
					}
					if c["object"] != "chat.completion.chunk" || c["id"] != chunks[0]["id"] {
						t.Errorf("chunk %d = %v", i, c)
					}
					switch {
					case i == 0 && (delta["role"] != "assistant" || choice["finish_reason"] != nil):
						t.Errorf("first chunk = %v, want the role", c)
					case i == len(chunks)-1 && (choice["finish_reason"] != "length" || len(delta) != 0):
						t.Errorf("last chunk = %v, want finish_reason length and an empty delta", c)
					}
				}
				if text.String() != whole.Choices[0].Message.Content {
					t.Errorf("streamed text %q, want the completion's %q", text.String(), whole.Choices[0].Message.Content)
				}
			})
		}
	}
}

func TestCompletions(t *testing.T) {
	st := start(t, nil)
	url := st.url(OpenAI, "/v1/completions")
	var got textCompletion
	// Prompts of 5 and 1 bytes: 2 + 1 tokens; 3 words each.
	post(t, url, `{"model":"m","prompt":["hello","x"],"max_tokens":3}`).decodeInto(t, &got)
	if got.Object != "text_completion" || len(got.Choices) != 2 {
		t.Fatalf("answer %+v", got)
	}
	for i, c := range got.Choices {
		wordsOf(t, c.Text, 3)
		if c.Index != i || *c.FinishReason != "length" {
			t.Errorf("choice %d = %+v", i, c)
		}
	}
	if want := `{"prompt_tokens":3,"completion_tokens":6,"total_tokens":9}`; string(got.Usage) != want {
		t.Errorf("usage %s, want %s", got.Usage, want)
	}
	chunks := sseJSON(t, openStream(t, url, `{"model":"m","prompt":"hello","max_tokens":3,"stream":true,"stream_options":{"include_usage":true}}`, "text/event-stream"), true)
	var text strings.Builder
	for _, c := range chunks[:len(chunks)-1] {
		text.WriteString(c["choices"].([]any)[0].(map[string]any)["text"].(string))
	}
	if text.String() != got.Choices[0].Text {
		t.Errorf("streamed %q, want %q", text.String(), got.Choices[0].Text)
	}
	if u := chunks[len(chunks)-1]["usage"]; !cmp.Equal(u, map[string]any{"prompt_tokens": 2.0, "completion_tokens": 3.0, "total_tokens": 5.0}) {
		t.Errorf("stream usage %v", u)
	}
}

func TestEmbeddings(t *testing.T) {
	st := start(t, nil)
	url := st.url(OpenAI, "/v1/embeddings")
	type answerBody struct {
		Object string
		Data   []struct {
			Object    string
			Index     int
			Embedding any
		}
		Usage map[string]int64
	}
	for _, tc := range []struct {
		name, body string
		n          int
		tokens     int64
	}{
		{"string", `{"model":"e","input":"hello world"}`, 1, 3},
		{"strings", `{"model":"e","input":["abcd","efgh","i"],"dimensions":8}`, 3, 3},
		{"token arrays", `{"model":"e","input":[[1,2,3],[4]]}`, 2, 4},
		{"base64", `{"model":"e","input":"x","encoding_format":"base64","dimensions":4}`, 1, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got answerBody
			a := post(t, url, tc.body)
			a.decodeInto(t, &got)
			if a.status != 200 || got.Object != "list" || len(got.Data) != tc.n || got.Usage["prompt_tokens"] != tc.tokens || got.Usage["total_tokens"] != tc.tokens {
				t.Errorf("answer %d %s, want %d vectors and %d tokens", a.status, a.body, tc.n, tc.tokens)
			}
			if b64, ok := got.Data[0].Embedding.(string); ok {
				raw, err := base64.StdEncoding.DecodeString(b64)
				if err != nil || len(raw) != 16 {
					t.Errorf("base64 embedding %q: %d bytes, %v; want 4 float32s", b64, len(raw), err)
				}
			}
			if again := post(t, url, tc.body); !equalExceptIDs(t, a.body, again.body) {
				t.Error("same input, different vectors")
			}
		})
	}
}
