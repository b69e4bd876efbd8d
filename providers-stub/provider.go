package providersstub

import (
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
)

// provider is one served provider.
type provider struct {
	name    string // OpenAI, Gemini, Qwen
	title   string // what the provider calls itself: "OpenAI"
	dialect dialect
	// prefix is where an OpenAI-shaped API lives: "" for OpenAI,
	// "/compatible-mode" for Qwen (DashScope's compatible mode).
	prefix string
}

func providerOf(name string) provider {
	switch name {
	case Gemini:
		return provider{name: Gemini, title: "Gemini", dialect: dialectGemini}
	case Qwen:
		return provider{name: Qwen, title: "Qwen", dialect: dialectOpenAI, prefix: "/compatible-mode"}
	}
	return provider{name: OpenAI, title: "OpenAI", dialect: dialectOpenAI}
}

// route is what a path serves: the API (the metrics' label) and its
// handler, which gets the request's body.
type route struct {
	api   string
	serve func(c *call, body []byte)
}

// route finds the API at path; the zero route (API "unknown") when none.
func (p provider) route(path string) (route, bool) {
	if path == "/api/v1/"+p.name+"/chat" {
		return route{"seed", serveSeed}, true
	}
	if p.dialect == dialectGemini {
		return geminiRoute(path)
	}
	switch rest, ok := strings.CutPrefix(path, p.prefix); {
	case !ok:
	case rest == "/v1/chat/completions":
		return route{"chat", serveChat}, true
	case rest == "/v1/completions":
		return route{"completions", serveCompletions}, true
	case rest == "/v1/embeddings":
		return route{"embeddings", serveEmbeddings}, true
	}
	return route{api: "unknown"}, false
}

// notFound is the provider's message for a path it does not serve.
func (p provider) notFound(r *http.Request) string {
	if p.dialect == dialectGemini {
		return "Requested entity was not found."
	}
	return "Invalid URL (" + r.Method + " " + r.URL.Path + ")"
}

// call is one request being answered.
type call struct {
	s *Server
	p provider
	w http.ResponseWriter
	r *http.Request
	k Knobs // the request's knobs: the flags' overridden by its headers
}

// fail answers with e in the provider's shape.
func (c *call) fail(e apiError) { c.p.dialect.write(c.w, e) }

// serve applies the knobs and answers with rt: a bad knob header is a 400;
// then the body is read, the latency waited, a forced status sent, or rt
// serves the request.
func (c *call) serve(rt route) {
	k, err := c.s.cfg.Knobs.withHeaders(c.r.Header)
	if err != nil {
		c.fail(invalid("", "", "%v", err))
		return
	}
	c.k = k
	body, aerr := c.readBody()
	if aerr != nil {
		c.fail(*aerr)
		return
	}
	if !sleep(c.r.Context(), k.Latency) {
		abort() // the client left, or the stop's grace ran out
	}
	key := func() [sha256.Size]byte { return attemptKey(c.p.name, c.r, body) }
	if status := c.s.faults.status(k, key); status != 0 {
		c.fail(statusError(c.p.dialect, status, k.RetryAfter))
		return
	}
	rt.serve(c, body)
}

// readBody reads the request body, at most MaxBodyBytes of it.
func (c *call) readBody() ([]byte, *apiError) {
	limit := c.s.cfg.MaxBodyBytes
	body, err := io.ReadAll(http.MaxBytesReader(c.w, c.r.Body, limit))
	var tooLarge *http.MaxBytesError
	switch {
	case errors.As(err, &tooLarge) && c.p.dialect == dialectGemini:
		e := invalid("", "", "Request payload size exceeds the limit: %d bytes.", limit)
		return nil, &e
	case errors.As(err, &tooLarge):
		return nil, &apiError{status: http.StatusRequestEntityTooLarge,
			message: fmt.Sprintf("Request body too large: the limit is %d bytes.", limit)}
	case err != nil:
		e := invalid("", "", "The request body could not be read.")
		return nil, &e
	}
	return body, nil
}

// decode unmarshals the JSON object body into v; the error is the
// provider's answer.
func (c *call) decode(body []byte, v any) *apiError {
	if err := json.Unmarshal(body, v); err != nil {
		e := decodeError(c.p.dialect, err)
		return &e
	}
	return nil
}

// report records u in the metrics and returns what the answer reports
// (the Usage knob applied); ok is false for no usage at all.
func (c *call) report(u usage) (usage, bool) {
	c.s.metrics.produced(c.p.name, u)
	return c.k.report(u)
}

// writeJSON sends v with status 200.
func (c *call) writeJSON(v any) { writeJSON(c.w, http.StatusOK, v) }
