package providersstub

import "encoding/json"

// OpenAI's streamed chat completion: "data: {chat.completion.chunk}" events
// (a role delta, a delta per word, a last one with the finish reason),
// with stream_options.include_usage "usage": null on each and a final
// chunk with no choices and the usage, then "data: [DONE]".

type chatChunk struct {
	ID                string          `json:"id"`
	Object            string          `json:"object"` // chat.completion.chunk
	Created           int64           `json:"created"`
	Model             string          `json:"model"`
	SystemFingerprint string          `json:"system_fingerprint"`
	Choices           []chunkChoice   `json:"choices"`
	Usage             json.RawMessage `json:"usage,omitempty"` // with include_usage: null, or the usage on the last chunk
}

type chunkChoice struct {
	Index        int       `json:"index"`
	Delta        chatDelta `json:"delta"`
	Logprobs     *struct{} `json:"logprobs"` // always null
	FinishReason *string   `json:"finish_reason"`
}

type chatDelta struct {
	Role    string  `json:"role,omitempty"`
	Content *string `json:"content,omitempty"`
}

func streamChat(c *call, out chatOutput, includeUsage bool) {
	u, reported := c.report(out.usage)
	var null json.RawMessage
	if includeUsage {
		null = json.RawMessage("null")
	}
	chunk := func(d chatDelta, finish *string) chatChunk {
		return chatChunk{
			ID: out.id, Object: "chat.completion.chunk", Created: out.created, Model: out.model,
			SystemFingerprint: fingerprint, Usage: null,
			Choices: []chunkChoice{{Delta: d, FinishReason: finish}},
		}
	}
	s := startStream(c, framingSSE)
	empty := ""
	s.chunk(chunk(chatDelta{Role: "assistant", Content: &empty}, nil))
	for _, p := range out.gen.pieces() {
		s.chunk(chunk(chatDelta{Content: &p}, nil))
	}
	finish := finishReason(out.gen)
	s.chunk(chunk(chatDelta{}, &finish))
	if includeUsage && reported {
		last := chunk(chatDelta{}, nil)
		last.Choices = []chunkChoice{}
		last.Usage = marshal(newOpenAIUsage(u))
		s.chunk(last)
	}
	s.done()
}

// marshal is json.Marshal of a value of the stub's own types, which always
// marshal.
func marshal(v any) json.RawMessage {
	b, _ := json.Marshal(v)
	return b
}
