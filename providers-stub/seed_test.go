package providersstub

import (
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"
)

// The seed's API answers as the seed's stubs did, plus a usage.
func TestSeedChat(t *testing.T) {
	st := start(t, nil)
	for _, tc := range []struct{ provider, title string }{{OpenAI, "OpenAI"}, {Gemini, "Gemini"}, {Qwen, "Qwen"}} {
		t.Run(tc.provider, func(t *testing.T) {
			// "hello world" (11 bytes: 3) and "abcde" (2): 5 prompt tokens.
			body := `{"prompt":"hello world","messages":[{"role":"user","content":"abcde"}],"extra":[1,2]}`
			a := post(t, st.url(tc.provider, "/api/v1/"+tc.provider+"/chat"), body)
			var got struct {
				ID, Provider, Created, Message string
				Received                       json.RawMessage
				Usage                          openAIUsage
			}
			a.decodeInto(t, &got)
			message := "Stubbed " + tc.title + " response"
			want := openAIUsage{PromptTokens: 5, CompletionTokens: ceil4(len(message)), TotalTokens: 5 + ceil4(len(message))}
			if a.status != http.StatusOK || got.Provider != tc.provider || got.Message != message || !cmp.Equal(got.Usage, want) {
				t.Errorf("answer %d %s, want provider %s, message %q, usage %+v", a.status, a.body, tc.provider, message, want)
			}
			if _, err := uuid.Parse(got.ID); err != nil {
				t.Errorf("id %q: %v", got.ID, err)
			}
			if _, err := time.Parse(time.RFC3339Nano, got.Created); err != nil {
				t.Errorf("created %q: %v", got.Created, err)
			}
			var sent, received any
			_ = json.Unmarshal([]byte(body), &sent)
			_ = json.Unmarshal(got.Received, &received)
			if !cmp.Equal(sent, received) {
				t.Errorf("received = %s, want the body echoed", got.Received)
			}
		})
	}
	// Any object will do; its prompt counts at least 1.
	var got struct{ Usage openAIUsage }
	post(t, st.url(OpenAI, "/api/v1/openai/chat"), `{}`).decodeInto(t, &got)
	if got.Usage.PromptTokens != 1 {
		t.Errorf("usage of {} = %+v, want 1 prompt token", got.Usage)
	}
	// Each listener serves its own provider's path only.
	if a := post(t, st.url(OpenAI, "/api/v1/gemini/chat"), `{}`); a.status != http.StatusNotFound {
		t.Errorf("gemini's seed path on openai's listener: %d, want 404", a.status)
	}
}
