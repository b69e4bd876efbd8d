package providersstub

import (
	"crypto/rand"
	"encoding/json"
	"strconv"
	"strings"
	"time"
)

// The OpenAI chat completions API (also Qwen's compatible mode): POST
// /v1/chat/completions.

type chatRequest struct {
	Model               string          `json:"model"`
	Messages            json.RawMessage `json:"messages"`
	MaxTokens           *int64          `json:"max_tokens"`
	MaxCompletionTokens *int64          `json:"max_completion_tokens"`
	Stream              bool            `json:"stream"`
	StreamOptions       *struct {
		IncludeUsage bool `json:"include_usage"`
	} `json:"stream_options"`
}

type chatMessage struct {
	Role    string          `json:"role"`
	Content json.RawMessage `json:"content"`
}

// openAIUsage is OpenAI's usage object.
type openAIUsage struct {
	PromptTokens     int64 `json:"prompt_tokens"`
	CompletionTokens int64 `json:"completion_tokens"`
	TotalTokens      int64 `json:"total_tokens"`
}

func newOpenAIUsage(u usage) *openAIUsage {
	return &openAIUsage{PromptTokens: u.prompt, CompletionTokens: u.completion, TotalTokens: u.total()}
}

type chatCompletion struct {
	ID                string       `json:"id"`
	Object            string       `json:"object"` // chat.completion
	Created           int64        `json:"created"`
	Model             string       `json:"model"`
	Choices           []chatChoice `json:"choices"`
	Usage             *openAIUsage `json:"usage,omitempty"` // absent: the usage knob says missing
	SystemFingerprint string       `json:"system_fingerprint"`
}

type chatChoice struct {
	Index        int       `json:"index"`
	Message      chatReply `json:"message"`
	Logprobs     *struct{} `json:"logprobs"` // always null
	FinishReason string    `json:"finish_reason"`
}

type chatReply struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

// chatOutput is one generated chat answer, before it is framed as a
// completion or a stream.
type chatOutput struct {
	id, model string
	created   int64
	gen       generation
	usage     usage
}

func serveChat(c *call, body []byte) {
	var req chatRequest
	if e := c.decode(body, &req); e != nil {
		c.fail(*e)
		return
	}
	texts, e := req.validate()
	if e != nil {
		c.fail(*e)
		return
	}
	limit := req.MaxTokens
	if req.MaxCompletionTokens != nil {
		limit = req.MaxCompletionTokens
	}
	gen := generate(strings.Join(texts, "\n"), deref(limit), c.s.cfg.CompletionTokens)
	out := chatOutput{
		id: "chatcmpl-" + rand.Text(), model: req.Model, created: time.Now().Unix(), gen: gen,
		usage: usage{prompt: promptTokens(texts), completion: tokens(gen.text())},
	}
	if req.Stream {
		streamChat(c, out, req.StreamOptions != nil && req.StreamOptions.IncludeUsage)
		return
	}
	resp := chatCompletion{
		ID: out.id, Object: "chat.completion", Created: out.created, Model: out.model,
		SystemFingerprint: fingerprint,
		Choices: []chatChoice{{
			Message:      chatReply{Role: "assistant", Content: gen.text()},
			FinishReason: finishReason(gen),
		}},
	}
	if u, ok := c.report(out.usage); ok {
		resp.Usage = newOpenAIUsage(u)
	}
	c.writeJSON(resp)
}

// fingerprint is the system_fingerprint of every answer.
const fingerprint = "fp_leaky_stub"

func finishReason(g generation) string {
	if g.limited {
		return "length"
	}
	return "stop"
}

func deref(p *int64) int64 {
	if p == nil {
		return 0
	}
	return *p
}

// validate checks the request as OpenAI does and returns the texts of its
// messages.
func (r chatRequest) validate() ([]string, *apiError) {
	fail := func(e apiError) ([]string, *apiError) { return nil, &e }
	if r.Model == "" {
		return fail(invalid("model", "", "you must provide a model parameter"))
	}
	if len(r.Messages) == 0 || string(r.Messages) == "null" {
		return fail(invalid("messages", "missing_required_parameter", "Missing required parameter: 'messages'."))
	}
	var msgs []chatMessage
	if err := json.Unmarshal(r.Messages, &msgs); err != nil {
		return fail(invalid("messages", "invalid_type", "Invalid type for 'messages': expected an array of message objects."))
	}
	if len(msgs) == 0 {
		return fail(invalid("messages", "empty_array", "Invalid 'messages': empty array. Expected an array with minimum length 1, but got an empty array instead."))
	}
	if e := checkLimit("max_tokens", r.MaxTokens); e != nil {
		return nil, e
	}
	if e := checkLimit("max_completion_tokens", r.MaxCompletionTokens); e != nil {
		return nil, e
	}
	if r.StreamOptions != nil && !r.Stream {
		return fail(invalid("stream_options", "invalid_value", "The 'stream_options' parameter is only allowed when 'stream' is enabled."))
	}
	var texts []string
	for i, m := range msgs {
		t, e := m.texts(i)
		if e != nil {
			return nil, e
		}
		texts = append(texts, t...)
	}
	return texts, nil
}

// texts returns the text of message i: its content string, or the text of
// each of its text parts (other parts, images, carry none).
func (m chatMessage) texts(i int) ([]string, *apiError) {
	if m.Role == "" {
		e := invalid(field("messages", i, "role"), "missing_required_parameter", "Missing required parameter: '%s'.", field("messages", i, "role"))
		return nil, &e
	}
	if len(m.Content) == 0 || string(m.Content) == "null" {
		return nil, nil
	}
	var s string
	if json.Unmarshal(m.Content, &s) == nil {
		return []string{s}, nil
	}
	var parts []struct {
		Type string  `json:"type"`
		Text *string `json:"text"`
	}
	if err := json.Unmarshal(m.Content, &parts); err != nil {
		e := invalid(field("messages", i, "content"), "invalid_type", "Invalid type for '%s': expected a string or an array of content parts.", field("messages", i, "content"))
		return nil, &e
	}
	var out []string
	for _, p := range parts {
		if p.Type == "text" && p.Text != nil {
			out = append(out, *p.Text)
		}
	}
	return out, nil
}

// field names a member of an array element the way OpenAI's errors do:
// messages[0].role.
func field(array string, i int, member string) string {
	return array + "[" + strconv.Itoa(i) + "]." + member
}

// checkLimit rejects a length limit below 1.
func checkLimit(name string, v *int64) *apiError {
	if v != nil && *v < 1 {
		e := invalid(name, "integer_below_min_value", "Invalid '%s': integer below minimum value. Expected a value >= 1, but got %d instead.", name, *v)
		return &e
	}
	return nil
}
