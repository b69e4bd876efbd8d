package providersstub

import (
	"crypto/rand"
	"encoding/json"
	"time"
)

// OpenAI's legacy completions API, POST /v1/completions: a prompt string
// or an array of them, one choice per prompt.

type completionsRequest struct {
	Model         string          `json:"model"`
	Prompt        json.RawMessage `json:"prompt"`
	MaxTokens     *int64          `json:"max_tokens"`
	Stream        bool            `json:"stream"`
	StreamOptions *struct {
		IncludeUsage bool `json:"include_usage"`
	} `json:"stream_options"`
}

type textCompletion struct {
	ID                string          `json:"id"`
	Object            string          `json:"object"` // text_completion
	Created           int64           `json:"created"`
	Model             string          `json:"model"`
	SystemFingerprint string          `json:"system_fingerprint"`
	Choices           []textChoice    `json:"choices"`
	Usage             json.RawMessage `json:"usage,omitempty"`
}

type textChoice struct {
	Text         string    `json:"text"`
	Index        int       `json:"index"`
	Logprobs     *struct{} `json:"logprobs"` // always null
	FinishReason *string   `json:"finish_reason"`
}

func serveCompletions(c *call, body []byte) {
	var req completionsRequest
	if e := c.decode(body, &req); e != nil {
		c.fail(*e)
		return
	}
	prompts, e := req.validate()
	if e != nil {
		c.fail(*e)
		return
	}
	gens := make([]generation, len(prompts))
	var u usage
	for i, p := range prompts {
		gens[i] = generate(p, deref(req.MaxTokens), c.s.cfg.CompletionTokens)
		u.completion += tokens(gens[i].text())
	}
	u.prompt = promptTokens(prompts)
	reported, ok := c.report(u)
	base := textCompletion{ID: "cmpl-" + rand.Text(), Object: "text_completion", Created: time.Now().Unix(),
		Model: req.Model, SystemFingerprint: fingerprint}
	if req.Stream {
		streamCompletions(c, base, gens, req.StreamOptions != nil && req.StreamOptions.IncludeUsage, reported, ok)
		return
	}
	for i, g := range gens {
		finish := finishReason(g)
		base.Choices = append(base.Choices, textChoice{Text: g.text(), Index: i, FinishReason: &finish})
	}
	if ok {
		base.Usage = marshal(newOpenAIUsage(reported))
	}
	c.writeJSON(base)
}

// streamCompletions sends each choice's words as chunks, then a chunk with
// its finish reason; with include_usage, a last chunk with the usage.
func streamCompletions(c *call, base textCompletion, gens []generation, includeUsage bool, u usage, reported bool) {
	if includeUsage {
		base.Usage = json.RawMessage("null")
	}
	chunk := func(ch textChoice) textCompletion {
		out := base
		out.Choices = []textChoice{ch}
		return out
	}
	s := startStream(c, framingSSE)
	for i, g := range gens {
		for _, p := range g.pieces() {
			s.chunk(chunk(textChoice{Text: p, Index: i}))
		}
		finish := finishReason(g)
		s.chunk(chunk(textChoice{Index: i, FinishReason: &finish}))
	}
	if includeUsage && reported {
		last := base
		last.Choices = []textChoice{}
		last.Usage = marshal(newOpenAIUsage(u))
		s.chunk(last)
	}
	s.done()
}

// validate checks the request and returns its prompts.
func (r completionsRequest) validate() ([]string, *apiError) {
	fail := func(e apiError) ([]string, *apiError) { return nil, &e }
	if r.Model == "" {
		return fail(invalid("model", "", "you must provide a model parameter"))
	}
	if e := checkLimit("max_tokens", r.MaxTokens); e != nil {
		return nil, e
	}
	if r.StreamOptions != nil && !r.Stream {
		return fail(invalid("stream_options", "invalid_value", "The 'stream_options' parameter is only allowed when 'stream' is enabled."))
	}
	prompts, ok := stringOrStrings(r.Prompt)
	switch {
	case len(r.Prompt) == 0 || string(r.Prompt) == "null":
		return fail(invalid("prompt", "missing_required_parameter", "Missing required parameter: 'prompt'."))
	case !ok || len(prompts) == 0:
		return fail(invalid("prompt", "invalid_type", "Invalid 'prompt': expected a string or a non-empty array of strings."))
	}
	return prompts, nil
}

// stringOrStrings decodes a JSON string or array of strings.
func stringOrStrings(raw json.RawMessage) ([]string, bool) {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return []string{s}, true
	}
	var ss []string
	if json.Unmarshal(raw, &ss) == nil {
		return ss, true
	}
	return nil, false
}
