package ratelimit

import (
	"bytes"
	"encoding/json"
	"errors"
	"strconv"
)

// maxBufferedBody bounds what the metering holds of one response: a JSON
// body up to here is parsed whole; an SSE event longer than this stops the
// reading (the body passes on untouched and is settled at its estimate).
const maxBufferedBody = 1 << 20

// bodyMode is how a response body carries its usage.
type bodyMode uint8

const (
	modeJSON bodyMode = iota // one JSON document, or Gemini's JSON-array stream
	modeSSE                  // text/event-stream: OpenAI/Qwen chunks, Gemini ?alt=sse
)

// usageState is what a body has said about its usage so far.
type usageState uint8

const (
	usageMissing usageState = iota // no usage seen
	usageGood                      // a well-formed usage (last one wins)
	usageBad                       // a malformed usage: negative, non-integer, unreadable
)

// usageFields are the usage members the providers send: OpenAI and Qwen
// (compatible mode) usage.{prompt,completion,total}_tokens, DashScope's
// input/output_tokens, Gemini's usageMetadata.*TokenCount.
type usageFields struct {
	Total      json.RawMessage `json:"total_tokens"`
	Prompt     json.RawMessage `json:"prompt_tokens"`
	Completion json.RawMessage `json:"completion_tokens"`
	Input      json.RawMessage `json:"input_tokens"`
	Output     json.RawMessage `json:"output_tokens"`
}

type geminiUsageFields struct {
	Total      json.RawMessage `json:"totalTokenCount"`
	Prompt     json.RawMessage `json:"promptTokenCount"`
	Candidates json.RawMessage `json:"candidatesTokenCount"`
}

// usageDoc is one JSON response or stream chunk as far as the metering reads
// it: the usage and the generated text.
type usageDoc struct {
	Usage         json.RawMessage `json:"usage"`
	UsageMetadata json.RawMessage `json:"usageMetadata"`
	Choices       *[]struct {
		Text    *string                    `json:"text"`
		Delta   *struct{ Content *string } `json:"delta"`
		Message *struct{ Content *string } `json:"message"`
	} `json:"choices"`
	Candidates []struct {
		Content struct {
			Parts []struct {
				Text string `json:"text"`
			} `json:"parts"`
		} `json:"content"`
	} `json:"candidates"`
}

// usageTotal reads a usage object (OpenAI/Qwen shape when gemini is false,
// Gemini's usageMetadata otherwise). A null or absent object is missing;
// a total that is not a non-negative integer is bad.
func usageTotal(raw json.RawMessage, gemini bool) (int64, usageState) {
	if len(raw) == 0 || string(raw) == "null" {
		return 0, usageMissing
	}
	var total, a, b json.RawMessage
	if gemini {
		var f geminiUsageFields
		if json.Unmarshal(raw, &f) != nil {
			return 0, usageBad
		}
		total, a, b = f.Total, f.Prompt, f.Candidates
	} else {
		var f usageFields
		if json.Unmarshal(raw, &f) != nil {
			return 0, usageBad
		}
		total, a, b = f.Total, f.Prompt, f.Completion
		if len(total) == 0 && len(a) == 0 && len(b) == 0 {
			a, b = f.Input, f.Output
		}
	}
	if len(total) > 0 {
		n, ok := tokenCount(total)
		if !ok {
			return 0, usageBad
		}
		return n, usageGood
	}
	if len(a) == 0 && len(b) == 0 {
		return 0, usageBad // an object without any count
	}
	x, okA := tokenCountOrZero(a)
	y, okB := tokenCountOrZero(b)
	if !okA || !okB || x > 1<<52 || y > 1<<52 {
		return 0, usageBad
	}
	return x + y, usageGood
}

// tokenCount parses a JSON integer ≥ 0 (no fraction, no exponent).
func tokenCount(raw json.RawMessage) (int64, bool) {
	n, err := strconv.ParseInt(string(raw), 10, 64)
	return n, err == nil && n >= 0
}

func tokenCountOrZero(raw json.RawMessage) (int64, bool) {
	if len(raw) == 0 || string(raw) == "null" {
		return 0, true
	}
	return tokenCount(raw)
}

// plausible reports whether a reported usage can be believed for a request
// estimated at estimate tokens: not above ten times the estimate plus a
// million (a provider bug, or a body forged upstream).
func plausible(n, estimate int64) bool {
	return n >= 0 && n <= 10*max(estimate, 0)+1_000_000
}

// usageReader follows one response body as it passes through the metering,
// chunk by chunk: it reads the usage the body reports (the last one wins),
// counts the generated text's bytes (for a stream cut short), and in SSE
// mode can remove the usage-only event the metering asked for on the
// client's behalf.
type usageReader struct {
	mode  bodyMode
	strip bool // SSE: drop the usage-only chunk (choices empty, usage set)

	buf      []byte // SSE: the incomplete line; JSON: the body so far
	event    []byte // SSE: the raw bytes of the current event's complete lines
	data     []byte // SSE: the current event's data
	overflow bool   // beyond maxBufferedBody: no longer parsed

	usage    int64
	state    usageState
	content  int64 // bytes of generated text seen
	seen     int64 // body bytes seen
	stripped int   // events removed
}

func newUsageReader(mode bodyMode, strip bool) *usageReader {
	return &usageReader{mode: mode, strip: strip && mode == modeSSE}
}

// feed reads the next chunk (end: it is the last) and returns the bytes the
// client should get in its place; changed is false when they are the chunk
// itself.
func (r *usageReader) feed(chunk []byte, end bool) (out []byte, changed bool) {
	r.seen += int64(len(chunk))
	if r.mode == modeJSON {
		r.feedJSON(chunk, end)
		return chunk, false
	}
	if r.overflow {
		return chunk, false
	}
	out = r.feedSSE(chunk, end)
	if !r.strip {
		return chunk, false
	}
	return out, !bytes.Equal(out, chunk)
}

func (r *usageReader) feedJSON(chunk []byte, end bool) {
	if !r.overflow {
		if len(r.buf)+len(chunk) > maxBufferedBody {
			r.overflow, r.buf = true, nil
		} else {
			r.buf = append(r.buf, chunk...)
		}
	}
	if end && !r.overflow {
		r.parseJSON()
	}
}

// feedSSE consumes the complete lines of buf+chunk; in strip mode it returns
// the complete events to forward, holding back the rest.
func (r *usageReader) feedSSE(chunk []byte, end bool) []byte {
	var out []byte
	r.buf = append(r.buf, chunk...)
	for {
		i := bytes.IndexByte(r.buf, '\n')
		if i < 0 {
			break
		}
		line := r.buf[:i+1]
		r.buf = r.buf[i+1:]
		if !r.strip {
			// The chunk passes as it is: only the event's data is kept.
			r.line(bytes.TrimSuffix(line[:i], []byte("\r")))
			continue
		}
		r.event = append(r.event, line...)
		if keep, done := r.line(bytes.TrimSuffix(line[:i], []byte("\r"))); done {
			if keep {
				out = append(out, r.event...)
			}
			r.event = r.event[:0]
		}
	}
	if len(r.buf)+len(r.event)+len(r.data) > maxBufferedBody {
		// One event beyond the bound: give up reading, let it all pass.
		r.overflow = true
		out = append(append(out, r.event...), r.buf...)
		r.buf, r.event, r.data = nil, nil, nil
		return out
	}
	if len(r.buf) == 0 {
		r.buf = nil // let the chunk's array go
	}
	if end {
		if len(r.buf) > 0 {
			r.event = append(r.event, r.buf...)
			r.line(bytes.TrimSuffix(r.buf, []byte("\r")))
			r.buf = nil
		}
		if len(r.data) > 0 {
			if r.dispatch(r.data) || !r.strip {
				out = append(out, r.event...)
			}
		} else {
			out = append(out, r.event...)
		}
		r.event, r.data = nil, nil
	}
	return out
}

// line reads one SSE line; done reports the end of an event (a blank line)
// and keep whether the event is forwarded.
func (r *usageReader) line(l []byte) (keep, done bool) {
	if len(l) == 0 {
		keep = len(r.data) == 0 || r.dispatch(r.data)
		r.data = r.data[:0]
		return keep, true
	}
	if v, ok := bytes.CutPrefix(l, []byte("data:")); ok {
		if len(r.data) > 0 {
			r.data = append(r.data, '\n')
		}
		r.data = append(r.data, bytes.TrimPrefix(v, []byte(" "))...)
	}
	return false, false
}

// dispatch reads one event's data and reports whether to forward it.
func (r *usageReader) dispatch(data []byte) bool {
	data = bytes.TrimSpace(data)
	if len(data) == 0 || string(data) == "[DONE]" {
		return true
	}
	var d usageDoc
	if json.Unmarshal(data, &d) != nil {
		return true // not ours to judge: forwarded as it came
	}
	usageOnly := r.readDoc(&d) && d.Choices != nil && len(*d.Choices) == 0
	if usageOnly && r.strip {
		r.stripped++
		return false
	}
	return true
}

// readDoc takes the usage and text of one document or chunk; it reports
// whether the document had an OpenAI-shaped usage.
func (r *usageReader) readDoc(d *usageDoc) bool {
	if d.Choices != nil {
		for _, c := range *d.Choices {
			for _, s := range []*string{c.Text, contentOf(c.Delta), contentOf(c.Message)} {
				if s != nil {
					r.content += int64(len(*s))
				}
			}
		}
	}
	for _, c := range d.Candidates {
		for _, p := range c.Content.Parts {
			r.content += int64(len(p.Text))
		}
	}
	openai := false
	if n, st := usageTotal(d.Usage, false); st != usageMissing {
		r.usage, r.state, openai = n, st, true
	}
	if n, st := usageTotal(d.UsageMetadata, true); st != usageMissing {
		r.usage, r.state = n, st
	}
	return openai
}

func contentOf(c *struct{ Content *string }) *string {
	if c == nil {
		return nil
	}
	return c.Content
}

// parseJSON reads the buffered body: one JSON object, or Gemini's stream
// as one JSON array of chunks (every complete element is read, so a cut
// array still counts what arrived).
func (r *usageReader) parseJSON() {
	b := bytes.TrimSpace(r.buf)
	if len(b) > 0 && b[0] == '[' {
		dec := json.NewDecoder(bytes.NewReader(b))
		if _, err := dec.Token(); err != nil {
			return
		}
		for dec.More() {
			var d usageDoc
			if err := dec.Decode(&d); err != nil {
				var typ *json.UnmarshalTypeError
				if errors.As(err, &typ) {
					continue // the element was read whole; a member had another shape
				}
				return // cut (or broken) here
			}
			r.readDoc(&d)
		}
		return
	}
	var d usageDoc
	if json.Unmarshal(b, &d) == nil {
		r.readDoc(&d)
	}
}

// result is the usage the body reported, ok only when one was reported,
// well formed and plausible for estimate.
func (r *usageReader) result(estimate int64) (int64, bool) {
	if r.state != usageGood || !plausible(r.usage, estimate) {
		return 0, false
	}
	return r.usage, true
}

// streamed is the generated text seen so far in bytes, for a body cut
// short; a JSON body is parsed first as far as it arrived, and one beyond
// the bound counts all its bytes.
func (r *usageReader) streamed() int64 {
	if r.mode == modeJSON {
		if r.overflow {
			return r.seen
		}
		r.content = 0
		r.parseJSON()
		if r.content == 0 {
			return r.seen
		}
	}
	return r.content
}
