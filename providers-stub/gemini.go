package providersstub

import (
	"crypto/rand"
	"strings"
)

// Gemini's generateContent API: POST /v1beta/models/{model}:generateContent
// and :streamGenerateContent (also under /v1/). A stream is SSE with
// ?alt=sse, else one JSON array of GenerateContentResponse chunks, as
// Gemini sends them; every chunk has usageMetadata (the candidates' tokens
// so far), the last one the whole usage and the finish reason.

type geminiRequest struct {
	Contents               []geminiContent  `json:"contents"`
	SystemInstruction      *geminiContent   `json:"systemInstruction"`
	SystemInstructionSnake *geminiContent   `json:"system_instruction"`
	GenerationConfig       *geminiGenConfig `json:"generationConfig"`
	GenerationConfigSnake  *geminiGenConfig `json:"generation_config"`
}

type geminiContent struct {
	Role  string `json:"role,omitempty"`
	Parts []struct {
		Text *string `json:"text"`
	} `json:"parts"`
}

type geminiGenConfig struct {
	MaxOutputTokens      *int64 `json:"maxOutputTokens"`
	MaxOutputTokensSnake *int64 `json:"max_output_tokens"`
}

type geminiResponse struct {
	Candidates    []geminiCandidate `json:"candidates"`
	UsageMetadata *geminiUsage      `json:"usageMetadata,omitempty"` // absent: the usage knob says missing
	ModelVersion  string            `json:"modelVersion"`
	ResponseID    string            `json:"responseId"`
}

type geminiCandidate struct {
	Content      geminiReply `json:"content"`
	FinishReason string      `json:"finishReason,omitempty"` // STOP or MAX_TOKENS, on the last chunk
	Index        int         `json:"index"`
}

type geminiReply struct {
	Parts []geminiText `json:"parts"`
	Role  string       `json:"role"` // model
}

type geminiText struct {
	Text string `json:"text"`
}

type geminiUsage struct {
	PromptTokenCount     int64 `json:"promptTokenCount"`
	CandidatesTokenCount int64 `json:"candidatesTokenCount"`
	TotalTokenCount      int64 `json:"totalTokenCount"`
}

func newGeminiUsage(u usage) *geminiUsage {
	return &geminiUsage{PromptTokenCount: u.prompt, CandidatesTokenCount: u.completion, TotalTokenCount: u.total()}
}

// geminiRoute finds the model and method of a Gemini path.
func geminiRoute(path string) (route, bool) {
	rest, ok := strings.CutPrefix(path, "/v1beta/models/")
	if !ok {
		rest, ok = strings.CutPrefix(path, "/v1/models/")
	}
	model, method, found := strings.Cut(rest, ":")
	if !ok || !found || model == "" || strings.Contains(model, "/") {
		return route{api: "unknown"}, false
	}
	switch method {
	case "generateContent":
		return route{"generate", func(c *call, body []byte) { serveGemini(c, body, model, false) }}, true
	case "streamGenerateContent":
		return route{"stream_generate", func(c *call, body []byte) { serveGemini(c, body, model, true) }}, true
	}
	return route{api: "unknown"}, false
}

func serveGemini(c *call, body []byte, model string, stream bool) {
	var req geminiRequest
	if e := c.decode(body, &req); e != nil {
		c.fail(*e)
		return
	}
	texts, limit, e := req.validate()
	if e != nil {
		c.fail(*e)
		return
	}
	f := framingArray
	if stream {
		switch alt := c.r.URL.Query().Get("alt"); alt {
		case "sse":
			f = framingSSE
		case "", "json":
		default:
			c.fail(invalid("", "", "Invalid value at 'alt' (%q): only json and sse are served.", alt))
			return
		}
	}
	gen := generate(strings.Join(texts, "\n"), limit, c.s.cfg.CompletionTokens)
	u := usage{prompt: promptTokens(texts), completion: tokens(gen.text())}
	base := geminiResponse{ModelVersion: model, ResponseID: rand.Text()}
	if stream {
		streamGemini(c, base, gen, u, f)
		return
	}
	base.Candidates = []geminiCandidate{{Content: reply(gen.text()), FinishReason: geminiFinish(gen)}}
	if reported, ok := c.report(u); ok {
		base.UsageMetadata = newGeminiUsage(reported)
	}
	c.writeJSON(base)
}

// streamGemini sends a chunk per word, each with the usage so far.
func streamGemini(c *call, base geminiResponse, gen generation, u usage, f framing) {
	_, ok := c.report(u)
	s := startStream(c, f)
	pieces := gen.pieces()
	var sofar strings.Builder
	for i, p := range pieces {
		sofar.WriteString(p)
		ch := base
		ch.Candidates = []geminiCandidate{{Content: reply(p)}}
		if i == len(pieces)-1 {
			ch.Candidates[0].FinishReason = geminiFinish(gen)
		}
		if ok {
			partial, _ := c.k.report(usage{prompt: u.prompt, completion: tokens(sofar.String())})
			ch.UsageMetadata = newGeminiUsage(partial)
		}
		s.chunk(ch)
	}
	s.end()
}

func reply(text string) geminiReply {
	return geminiReply{Parts: []geminiText{{Text: text}}, Role: "model"}
}

func geminiFinish(g generation) string {
	if g.limited {
		return "MAX_TOKENS"
	}
	return "STOP"
}

// validate checks the request as Gemini does and returns the texts of its
// system instruction and contents, and its maxOutputTokens (0: none).
func (r geminiRequest) validate() ([]string, int64, *apiError) {
	fail := func(e apiError) ([]string, int64, *apiError) { return nil, 0, &e }
	if len(r.Contents) == 0 {
		return fail(invalid("contents", "", "* GenerateContentRequest.contents: contents is not specified"))
	}
	var texts []string
	for _, sys := range []*geminiContent{r.SystemInstruction, r.SystemInstructionSnake} {
		if sys != nil {
			texts = append(texts, sys.texts()...)
		}
	}
	for i, content := range r.Contents {
		if len(content.Parts) == 0 {
			return fail(invalid("contents", "", "* GenerateContentRequest.contents[%d].parts: contents.parts must not be empty.", i))
		}
		texts = append(texts, content.texts()...)
	}
	var limit *int64
	for _, g := range []*geminiGenConfig{r.GenerationConfig, r.GenerationConfigSnake} {
		switch {
		case g == nil:
		case g.MaxOutputTokens != nil:
			limit = g.MaxOutputTokens
		case g.MaxOutputTokensSnake != nil:
			limit = g.MaxOutputTokensSnake
		}
	}
	if limit != nil && *limit < 1 {
		return fail(invalid("generationConfig", "", "* GenerateContentRequest.generation_config.max_output_tokens: max_output_tokens must be positive."))
	}
	return texts, deref(limit), nil
}

func (c geminiContent) texts() []string {
	var out []string
	for _, p := range c.Parts {
		if p.Text != nil {
			out = append(out, *p.Text)
		}
	}
	return out
}
