package providersstub

import (
	"bytes"
	"encoding/json"
	"time"

	"github.com/google/uuid"
)

// The seed's provider API, POST /api/v1/{provider}/chat: any JSON object
// in, {id, provider, received (the body echoed), created, message:
// "Stubbed <Name> response"} out, as the seed's stubs answered, plus a
// usage: the prompt's tokens from the body's "prompt" string and the text
// of its "messages" (OpenAI-shaped), the completion's from the message.

type seedRequest struct {
	Prompt   json.RawMessage `json:"prompt"`
	Messages json.RawMessage `json:"messages"`
}

type seedResponse struct {
	ID       string          `json:"id"`
	Provider string          `json:"provider"`
	Received json.RawMessage `json:"received"`
	Created  string          `json:"created"` // RFC 3339, UTC
	Message  string          `json:"message"`
	Usage    *openAIUsage    `json:"usage,omitempty"`
}

func serveSeed(c *call, body []byte) {
	var req seedRequest
	if e := c.decode(body, &req); e != nil {
		c.fail(*e)
		return
	}
	if string(bytes.TrimSpace(body)) == "null" {
		c.fail(invalid("", "", "The request body must be a JSON object."))
		return
	}
	var texts []string
	var prompt string
	if json.Unmarshal(req.Prompt, &prompt) == nil {
		texts = append(texts, prompt)
	}
	var msgs []chatMessage
	if json.Unmarshal(req.Messages, &msgs) == nil {
		for i, m := range msgs {
			t, e := m.texts(i)
			if e != nil {
				c.fail(*e)
				return
			}
			texts = append(texts, t...)
		}
	}
	resp := seedResponse{
		ID: uuid.NewString(), Provider: c.p.name, Received: json.RawMessage(body),
		Created: time.Now().UTC().Format(time.RFC3339Nano), Message: "Stubbed " + c.p.title + " response",
	}
	if u, ok := c.report(usage{prompt: promptTokens(texts), completion: tokens(resp.Message)}); ok {
		resp.Usage = newOpenAIUsage(u)
	}
	c.writeJSON(resp)
}
