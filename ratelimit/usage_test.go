package ratelimit

import (
	"bytes"
	"strings"
	"testing"
)

func TestJSONUsage(t *testing.T) {
	tests := []struct {
		name     string
		body     string
		estimate int64
		want     int64
		ok       bool
		content  int64
	}{
		{"openai total", `{"choices":[{"message":{"content":"hello"}}],"usage":{"prompt_tokens":10,"completion_tokens":2,"total_tokens":12}}`, 100, 12, true, 5},
		{"prompt plus completion", `{"usage":{"prompt_tokens":10,"completion_tokens":2}}`, 100, 12, true, 0},
		{"dashscope input output", `{"output":{"text":"x"},"usage":{"input_tokens":7,"output_tokens":3}}`, 100, 10, true, 0},
		{"gemini", `{"candidates":[{"content":{"parts":[{"text":"abc"}]}}],"usageMetadata":{"promptTokenCount":4,"candidatesTokenCount":1,"totalTokenCount":5}}`, 100, 5, true, 3},
		{"seed stub", `{"id":"x","provider":"openai","received":{"prompt":"hi"},"created":"2026-01-01T00:00:00Z","message":"Stubbed OpenAI response","usage":{"prompt_tokens":1,"completion_tokens":6,"total_tokens":7}}`, 100, 7, true, 0},
		{"embeddings", `{"data":[],"usage":{"prompt_tokens":9,"total_tokens":9}}`, 100, 9, true, 0},
		{"missing", `{"choices":[]}`, 100, 0, false, 0},
		{"null", `{"usage":null}`, 100, 0, false, 0},
		{"negative", `{"usage":{"total_tokens":-5}}`, 100, 0, false, 0},
		{"fraction", `{"usage":{"total_tokens":1.5}}`, 100, 0, false, 0},
		{"exponent", `{"usage":{"total_tokens":1e3}}`, 100, 0, false, 0},
		{"string", `{"usage":{"total_tokens":"12"}}`, 100, 0, false, 0},
		{"usage not an object", `{"usage":"lots"}`, 100, 0, false, 0},
		{"empty usage object", `{"usage":{}}`, 100, 0, false, 0},
		{"absurd", `{"usage":{"total_tokens":2000001}}`, 100000, 0, false, 0},
		{"large but plausible", `{"usage":{"total_tokens":2000000}}`, 100000, 2000000, true, 0},
		{"overflowing sum", `{"usage":{"prompt_tokens":9223372036854775807,"completion_tokens":9223372036854775807}}`, 100, 0, false, 0},
		{"not json", `<html>bad gateway</html>`, 100, 0, false, 0},
		{"empty", ``, 100, 0, false, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newUsageReader(modeJSON, true)
			// Fed in two pieces: the JSON reader buffers.
			half := len(tt.body) / 2
			if out, changed := r.feed([]byte(tt.body[:half]), false); changed || string(out) != tt.body[:half] {
				t.Errorf("JSON chunk changed: %q", out)
			}
			r.feed([]byte(tt.body[half:]), true)
			got, ok := r.result(tt.estimate)
			if got != tt.want || ok != tt.ok {
				t.Errorf("result = %d, %v; want %d, %v", got, ok, tt.want, tt.ok)
			}
			if r.content != tt.content {
				t.Errorf("content = %d, want %d", r.content, tt.content)
			}
		})
	}
}

// openAIStream is an OpenAI chat stream as the stub sends it: with
// include_usage, "usage":null on each chunk and a last usage-only chunk.
func openAIStream(words []string, usage string, eol string) (stream, withoutUsage string) {
	var b, w strings.Builder
	ev := func(data string, keep bool) {
		s := "data: " + data + eol + eol
		b.WriteString(s)
		if keep {
			w.WriteString(s)
		}
	}
	ev(`{"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"role":"assistant","content":""}}],"usage":null}`, true)
	for _, x := range words {
		ev(`{"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"`+x+`"}}],"usage":null}`, true)
	}
	ev(`{"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"usage":null}`, true)
	if usage != "" {
		ev(`{"id":"c","object":"chat.completion.chunk","choices":[],"usage":`+usage+`}`, false)
	}
	ev("[DONE]", true)
	return b.String(), w.String()
}

// feedAll feeds body in pieces of size n (the last with end) and returns
// what the client gets.
func feedAll(r *usageReader, body string, n int) string {
	var out bytes.Buffer
	for i := 0; i < len(body); i += n {
		end := min(i+n, len(body))
		o, _ := r.feed([]byte(body[i:end]), false)
		out.Write(o)
	}
	o, _ := r.feed(nil, true)
	out.Write(o)
	return out.String()
}

func TestSSEUsageOpenAI(t *testing.T) {
	words := []string{"Hello", " there", " friend"}
	for _, eol := range []string{"\n", "\r\n"} {
		stream, stripped := openAIStream(words, `{"prompt_tokens":9,"completion_tokens":3,"total_tokens":12}`, eol)
		for _, n := range []int{1, 2, 7, 64, len(stream)} {
			for _, strip := range []bool{false, true} {
				r := newUsageReader(modeSSE, strip)
				got := feedAll(r, stream, n)
				want := stream
				if strip {
					want = stripped
				}
				if got != want {
					t.Errorf("eol %q, pieces of %d, strip %v: client got\n%q\nwant\n%q", eol, n, strip, got, want)
				}
				if u, ok := r.result(100); u != 12 || !ok {
					t.Errorf("eol %q, pieces of %d: usage %d, %v; want 12", eol, n, u, ok)
				}
				if r.content != int64(len("Hello there friend")) {
					t.Errorf("content = %d", r.content)
				}
				if wantStripped := map[bool]int{true: 1}[strip]; r.stripped != wantStripped {
					t.Errorf("stripped = %d, want %d", r.stripped, wantStripped)
				}
			}
		}
	}
}

func TestSSEUsageMissingOrAbsurd(t *testing.T) {
	for _, tt := range []struct{ name, usage string }{
		{"missing", ""},
		{"absurd", `{"total_tokens":99999999}`},
		{"negative", `{"prompt_tokens":-1,"completion_tokens":3}`},
	} {
		stream, _ := openAIStream([]string{"a"}, tt.usage, "\n")
		r := newUsageReader(modeSSE, true)
		feedAll(r, stream, 5)
		if u, ok := r.result(100); ok {
			t.Errorf("%s: usage %d accepted", tt.name, u)
		}
	}
}

func TestSSEUsageGemini(t *testing.T) {
	stream := "data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"Hi\"}]}}],\"usageMetadata\":{\"promptTokenCount\":4,\"candidatesTokenCount\":1,\"totalTokenCount\":5}}\r\n\r\n" +
		"data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\" you\"}]},\"finishReason\":\"STOP\"}],\"usageMetadata\":{\"promptTokenCount\":4,\"candidatesTokenCount\":2,\"totalTokenCount\":6}}\r\n\r\n"
	r := newUsageReader(modeSSE, true)
	if got := feedAll(r, stream, 3); got != stream {
		t.Errorf("a Gemini stream was changed: %q", got)
	}
	if u, ok := r.result(50); u != 6 || !ok {
		t.Errorf("usage %d, %v; want the last, 6", u, ok)
	}
	if r.content != 6 {
		t.Errorf("content %d, want 6", r.content)
	}
}

func TestJSONArrayStreamGemini(t *testing.T) {
	stream := "[\n{\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"Hi\"}]}}],\"usageMetadata\":{\"totalTokenCount\":5}}\n,\n" +
		"{\"candidates\":[{\"content\":{\"parts\":[{\"text\":\" you\"}]}}],\"usageMetadata\":{\"totalTokenCount\":7}}\n]\n"
	r := newUsageReader(modeJSON, false)
	if got := feedAll(r, stream, 10); got != stream {
		t.Errorf("changed: %q", got)
	}
	if u, ok := r.result(50); u != 7 || !ok {
		t.Errorf("usage %d, %v; want 7", u, ok)
	}
	// Cut after the first element: what arrived is counted.
	cut := newUsageReader(modeJSON, false)
	cut.feed([]byte(stream[:len(stream)-40]), false)
	if n := cut.streamed(); n != 2 {
		t.Errorf("streamed of a cut array = %d, want 2", n)
	}
}

func TestSSEOverflowPassesThrough(t *testing.T) {
	big := "data: {\"x\":\"" + strings.Repeat("a", 2*maxBufferedBody) + "\"}\n\n"
	r := newUsageReader(modeSSE, true)
	got := feedAll(r, big+"data: [DONE]\n\n", 1<<16)
	if got != big+"data: [DONE]\n\n" {
		t.Errorf("an oversized event was not passed through (%d bytes out)", len(got))
	}
	if !r.overflow {
		t.Error("no overflow recorded")
	}
	if _, ok := r.result(10); ok {
		t.Error("usage from an unread stream")
	}
}

func TestSSEUnterminatedEnd(t *testing.T) {
	// The stream ends without the blank line: the last event still counts
	// and reaches the client.
	stream := "data: {\"choices\":[{\"delta\":{\"content\":\"ab\"}}]}\n\ndata: {\"choices\":[],\"usage\":{\"total_tokens\":3}}"
	r := newUsageReader(modeSSE, false)
	if got := feedAll(r, stream, 4); got != stream {
		t.Errorf("got %q", got)
	}
	if u, ok := r.result(10); u != 3 || !ok {
		t.Errorf("usage %d, %v", u, ok)
	}
	rs := newUsageReader(modeSSE, true)
	if got := feedAll(rs, stream, 4); got != "data: {\"choices\":[{\"delta\":{\"content\":\"ab\"}}]}\n\n" {
		t.Errorf("strip: got %q", got)
	}
}

// FuzzUsageReader feeds any bytes in any split: the reader never panics,
// passes the body on unchanged unless it strips, and when stripping only
// ever removes bytes.
func FuzzUsageReader(f *testing.F) {
	stream, _ := openAIStream([]string{"a", "b"}, `{"total_tokens":4}`, "\r\n")
	f.Add([]byte(stream), uint8(3))
	f.Add([]byte(`[{"usageMetadata":{"totalTokenCount":2}},`), uint8(5))
	f.Add([]byte("data: {\"choices\":[],\"usage\":{\"total_tokens\":1.5}}\r\rdata:"), uint8(1))
	f.Fuzz(func(t *testing.T, body []byte, n uint8) {
		size := int(n%32) + 1
		for _, mode := range []bodyMode{modeJSON, modeSSE} {
			for _, strip := range []bool{false, true} {
				r := newUsageReader(mode, strip)
				got := feedAll(r, string(body), size)
				if (!strip || mode == modeJSON) && got != string(body) {
					t.Fatalf("mode %d: body changed without stripping", mode)
				}
				if len(got) > len(body) {
					t.Fatalf("mode %d strip: %d bytes out of %d in", mode, len(got), len(body))
				}
				r.result(10)
				r.streamed()
			}
		}
	})
}
