package providersstub

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// readSSE reads an event stream by the parsing rules of the HTML
// standard (lines end in LF or CRLF; "data:" lines, one leading space
// dropped, joined by LF; a blank line dispatches; ":" lines are comments)
// and returns every event's data in order. err is what ended the stream
// other than its clean end (a cut stream: io.ErrUnexpectedEOF); an event
// not dispatched by then is dropped, as a browser drops it.
func readSSE(r io.Reader) (events []string, err error) {
	br := bufio.NewReader(r)
	var data []string
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			if errors.Is(err, io.EOF) {
				return events, nil
			}
			return events, err
		}
		line = strings.TrimSuffix(strings.TrimSuffix(line, "\n"), "\r")
		switch name, value, _ := strings.Cut(line, ":"); {
		case line == "":
			if data != nil {
				events = append(events, strings.Join(data, "\n"))
			}
			data = nil
		case name == "data":
			data = append(data, strings.TrimPrefix(value, " "))
		}
	}
}

// openStream posts body to url and returns the answer's body unread (closed
// at cleanup), after checking the status is 200 and the content type ct.
func openStream(t *testing.T, url, body, ct string, headers ...string) io.Reader {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	if got := resp.Header.Get("Content-Type"); resp.StatusCode != http.StatusOK || got != ct {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("POST %s = %d %q %s, want 200 %q", url, resp.StatusCode, got, b, ct)
	}
	return resp.Body
}

// sseJSON reads a whole event stream of JSON events ending in [DONE] (when
// done) and returns the events decoded.
func sseJSON(t *testing.T, r io.Reader, done bool) []map[string]any {
	t.Helper()
	events, err := readSSE(r)
	if err != nil {
		t.Fatalf("reading the stream: %v (events so far: %q)", err, events)
	}
	if done {
		if len(events) == 0 || events[len(events)-1] != "[DONE]" {
			t.Fatalf("stream does not end with [DONE]: %q", events)
		}
		events = events[:len(events)-1]
	}
	out := make([]map[string]any, len(events))
	for i, e := range events {
		if err := json.Unmarshal([]byte(e), &out[i]); err != nil {
			t.Fatalf("event %d %q: %v", i, e, err)
		}
	}
	return out
}

// random are the members whose values differ between two answers to the
// same request.
var random = []string{"id", "created", "responseId"}

// equalExceptIDs reports whether two JSON answers are equal but for their
// ids and creation times.
func equalExceptIDs(t *testing.T, a, b []byte) bool {
	var x, y map[string]any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return false
	}
	for _, k := range random {
		delete(x, k)
		delete(y, k)
	}
	return cmp.Equal(x, y)
}

// equalSSEExceptIDs is equalExceptIDs for each event of two streams.
func equalSSEExceptIDs(t *testing.T, a, b []byte) bool {
	x, errX := readSSE(bytes.NewReader(a))
	y, errY := readSSE(bytes.NewReader(b))
	if errX != nil || errY != nil || len(x) != len(y) {
		return false
	}
	for i := range x {
		if x[i] != y[i] && !equalExceptIDs(t, []byte(x[i]), []byte(y[i])) {
			return false
		}
	}
	return true
}

func TestReadSSE(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		want     []string
	}{
		{"lf", "data: a\n\ndata: b\n\n", []string{"a", "b"}},
		{"crlf and comments", ": hi\r\ndata:a\r\n\r\n", []string{"a"}},
		{"multi-line", "data: a\ndata: b\n\n", []string{"a\nb"}},
		{"undispatched", "data: a\n\ndata: b\n", []string{"a"}},
		{"other fields", "event: x\nid: 1\ndata: a\n\n", []string{"a"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := readSSE(strings.NewReader(tc.in))
			if err != nil || !cmp.Equal(got, tc.want) {
				t.Errorf("readSSE(%q) = %q, %v, want %q", tc.in, got, err, tc.want)
			}
		})
	}
}

// x-stub-truncate cuts a stream after N chunks: the client reads N events
// and then an unexpected end, never the usage or the end marker. A stream
// of no more chunks is whole.
func TestTruncateCutsStreams(t *testing.T) {
	st := start(t, nil)
	chat := `{"model":"m","messages":[{"role":"user","content":"hi"}],"max_tokens":4,"stream":true,"stream_options":{"include_usage":true}}`
	gemini := `{"contents":[{"parts":[{"text":"hi"}]}],"generationConfig":{"maxOutputTokens":4}}`
	for _, tc := range []struct {
		name, url, body, ct string
	}{
		{"openai", st.url(OpenAI, "/v1/chat/completions"), chat, "text/event-stream"},
		{"qwen", st.url(Qwen, "/compatible-mode/v1/chat/completions"), chat, "text/event-stream"},
		{"gemini sse", st.url(Gemini, "/v1beta/models/g:streamGenerateContent?alt=sse"), gemini, "text/event-stream"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			events, err := readSSE(openStream(t, tc.url, tc.body, tc.ct, "x-stub-truncate", "3"))
			if !errors.Is(err, io.ErrUnexpectedEOF) || len(events) != 3 {
				t.Errorf("truncated after 3: %d events %q, %v; want 3 and io.ErrUnexpectedEOF", len(events), events, err)
			}
			events, err = readSSE(openStream(t, tc.url, tc.body, tc.ct, "x-stub-truncate", "1000"))
			if err != nil || len(events) < 4 {
				t.Errorf("truncate beyond its end: %d events, %v; want the whole stream", len(events), err)
			}
		})
	}
	t.Run("gemini array", func(t *testing.T) {
		body, err := io.ReadAll(openStream(t, st.url(Gemini, "/v1beta/models/g:streamGenerateContent"), gemini,
			"application/json", "x-stub-truncate", "2"))
		if !errors.Is(err, io.ErrUnexpectedEOF) || json.Valid(body) || bytes.Count(body, []byte(`"candidates"`)) != 2 {
			t.Errorf("truncated array: %s, %v; want 2 elements, no end, io.ErrUnexpectedEOF", body, err)
		}
	})
}

// The delays are lower bounds on when chunks arrive: latency before the
// headers, then ttft before the first chunk, then chunk-delay before each
// other one. (Only lower bounds: an upper bound fails on a loaded machine.)
func TestStreamDelays(t *testing.T) {
	st := start(t, func(c *Config) { c.Knobs.TTFT = 150 * time.Millisecond }) // the flag's default; headers add the rest
	begin := time.Now()
	r := openStream(t, st.url(OpenAI, "/v1/chat/completions"),
		`{"model":"m","messages":[{"role":"user","content":"hi"}],"max_tokens":3,"stream":true}`,
		"text/event-stream", "x-stub-latency", "100ms", "x-stub-chunk-delay", "50ms")
	if d := time.Since(begin); d < 100*time.Millisecond {
		t.Errorf("headers after %v, want at least the 100ms latency", d)
	}
	br := bufio.NewReader(r)
	if _, err := br.ReadString('\n'); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(begin); d < 250*time.Millisecond {
		t.Errorf("first chunk after %v, want at least latency+ttft = 250ms", d)
	}
	events, err := readSSE(br)
	// role, 3 words, finish, [DONE]: 5 more chunks after the first, each
	// after the chunk delay.
	if err != nil || len(events) != 5 {
		t.Fatalf("rest of the stream: %q, %v", events, err)
	}
	if d := time.Since(begin); d < 250*time.Millisecond+5*50*time.Millisecond {
		t.Errorf("stream ended after %v, want at least 500ms", d)
	}
}
