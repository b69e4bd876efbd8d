package providersstub

import (
	"flag"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

const (
	chatBody   = `{"model":"m","messages":[{"role":"user","content":"abcd"}],"max_tokens":2}`
	geminiBody = `{"contents":[{"parts":[{"text":"abcd"}]}],"generationConfig":{"maxOutputTokens":2}}`
)

func TestStatusKnob(t *testing.T) {
	st := start(t, nil)
	chatURL, genURL := st.url(OpenAI, "/v1/chat/completions"), st.url(Gemini, "/v1beta/models/g:generateContent")
	for _, tc := range []struct {
		name, url, body, status string
		retryAfter              string // header x-stub-retry-after
		want                    string // the error body
		wantRetryAfter          string
	}{
		{"openai 429", chatURL, chatBody, "429", "7",
			`{"error":{"message":"Rate limit reached for requests. Please try again in 7s.","type":"requests","param":null,"code":"rate_limit_exceeded"}}`, "7"},
		{"openai 429 default retry-after", chatURL, chatBody, "429", "",
			`{"error":{"message":"Rate limit reached for requests. Please try again in 1s.","type":"requests","param":null,"code":"rate_limit_exceeded"}}`, "1"},
		{"openai 500", chatURL, chatBody, "500", "",
			`{"error":{"message":"The server had an error while processing your request. Sorry about that!","type":"server_error","param":null,"code":null}}`, ""},
		{"qwen 503", st.url(Qwen, "/compatible-mode/v1/chat/completions"), chatBody, "503", "",
			`{"error":{"message":"The engine is currently overloaded, please try again later.","type":"server_error","param":null,"code":null}}`, ""},
		{"gemini 429", genURL, geminiBody, "429", "3",
			`{"error":{"code":429,"message":"Resource has been exhausted (e.g. check quota).","status":"RESOURCE_EXHAUSTED","details":[{"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"3s"}]}}`, "3"},
		{"gemini 503", genURL, geminiBody, "503", "",
			`{"error":{"code":503,"message":"The model is overloaded. Please try again later.","status":"UNAVAILABLE"}}`, ""},
		{"gemini 502", genURL, geminiBody, "502", "",
			`{"error":{"code":502,"message":"Bad Gateway","status":"INTERNAL"}}`, ""},
		{"seed 500", st.url(Qwen, "/api/v1/qwen/chat"), `{}`, "500", "",
			`{"error":{"message":"The server had an error while processing your request. Sorry about that!","type":"server_error","param":null,"code":null}}`, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := []string{"x-stub-status", tc.status}
			if tc.retryAfter != "" {
				h = append(h, "x-stub-retry-after", tc.retryAfter)
			}
			a := post(t, tc.url, tc.body, h...)
			if strconv.Itoa(a.status) != tc.status || !jsonEqual(t, a.body, tc.want) || a.header.Get("Retry-After") != tc.wantRetryAfter {
				t.Errorf("answer %d Retry-After %q %s, want %s %q %s", a.status, a.header.Get("Retry-After"), a.body, tc.status, tc.wantRetryAfter, tc.want)
			}
		})
	}
}

// A flag's knob applies to every request; a header overrides it.
func TestKnobFlagsAreDefaultsHeadersOverride(t *testing.T) {
	st := start(t, func(c *Config) { c.Knobs.Status = http.StatusServiceUnavailable })
	url := st.url(OpenAI, "/v1/chat/completions")
	if a := post(t, url, chatBody); a.status != http.StatusServiceUnavailable {
		t.Errorf("with -status 503: %d", a.status)
	}
	if a := post(t, url, chatBody, "x-stub-status", "0"); a.status != http.StatusOK {
		t.Errorf("with -status 503 and x-stub-status 0: %d %s", a.status, a.body)
	}
}

func TestFailFirst(t *testing.T) {
	st := start(t, nil)
	url := st.url(OpenAI, "/v1/chat/completions")
	statuses := func(n int, body string, headers ...string) []int {
		var out []int
		for range n {
			out = append(out, post(t, url, body, headers...).status)
		}
		return out
	}
	want := []int{503, 503, 200, 200}
	if got := statuses(4, chatBody, "x-request-id", "a", "x-stub-fail-first", "2"); !cmp.Equal(got, want) {
		t.Errorf("request a: %v, want %v", got, want)
	}
	if got := statuses(4, chatBody, "x-request-id", "b", "x-stub-fail-first", "2"); !cmp.Equal(got, want) {
		t.Errorf("request b, after a: %v, want %v (counted apart)", got, want)
	}
	// Without an id, the attempts of one body count together.
	other := strings.Replace(chatBody, "abcd", "wxyz", 1)
	if got := statuses(2, other, "x-stub-fail-first", "1"); !cmp.Equal(got, []int{503, 200}) {
		t.Errorf("no id: %v, want [503 200]", got)
	}
	// The flag's default applies to every request.
	st2 := start(t, func(c *Config) { c.Knobs.FailFirst = 1 })
	url = st2.url(Gemini, "/v1beta/models/g:generateContent")
	for _, id := range []string{"x", "y"} {
		got := []int{post(t, url, geminiBody, "x-request-id", id).status, post(t, url, geminiBody, "x-request-id", id).status}
		if !cmp.Equal(got, []int{503, 200}) {
			t.Errorf("-fail-first 1, request %s: %v", id, got)
		}
	}
}

// The error rate's draws are seeded: two stubs with one seed fail the same
// requests of a sequence, at about the rate.
func TestErrorRate(t *testing.T) {
	run := func() []int {
		st := start(t, func(c *Config) { c.Knobs.ErrorRate, c.ErrorSeed = 0.25, 7 })
		var out []int
		for range 200 {
			out = append(out, post(t, st.url(OpenAI, "/v1/chat/completions"), chatBody).status)
		}
		return out
	}
	first, second := run(), run()
	if !cmp.Equal(first, second) {
		t.Errorf("same seed, different failures:\n%v\n%v", first, second)
	}
	failed := 0
	for _, s := range first {
		switch s {
		case http.StatusInternalServerError:
			failed++
		case http.StatusOK:
		default:
			t.Fatalf("status %d", s)
		}
	}
	if failed < 20 || failed > 80 { // 50 expected; the sequence is fixed by the seed
		t.Errorf("%d of 200 failed at rate 0.25", failed)
	}
	st := start(t, func(c *Config) { c.Knobs.ErrorRate = 0.25 })
	for range 20 {
		if a := post(t, st.url(Gemini, "/v1beta/models/g:generateContent"), geminiBody, "x-stub-error-rate", "1"); a.status != 500 {
			t.Fatalf("x-stub-error-rate 1: %d", a.status)
		}
		if a := post(t, st.url(Gemini, "/v1beta/models/g:generateContent"), geminiBody, "x-stub-error-rate", "0"); a.status != 200 {
			t.Fatalf("x-stub-error-rate 0: %d", a.status)
		}
	}
}

func TestUsageKnob(t *testing.T) {
	st := start(t, nil)
	chatStream := chatBody[:len(chatBody)-1] + `,"stream":true,"stream_options":{"include_usage":true}}`
	for _, tc := range []struct {
		usage                        string
		chat, chatLast, gemini, seed string // the usage each reports; "" none
	}{
		{"normal",
			`{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3}`, `{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3}`,
			`{"promptTokenCount":1,"candidatesTokenCount":2,"totalTokenCount":3}`, `{"prompt_tokens":1,"completion_tokens":6,"total_tokens":7}`},
		{"missing", "", "", "", ""},
		{"absurd",
			`{"prompt_tokens":1000000000000,"completion_tokens":1000000000000,"total_tokens":2000000000000}`,
			`{"prompt_tokens":1000000000000,"completion_tokens":1000000000000,"total_tokens":2000000000000}`,
			`{"promptTokenCount":1000000000000,"candidatesTokenCount":1000000000000,"totalTokenCount":2000000000000}`,
			`{"prompt_tokens":1000000000000,"completion_tokens":1000000000000,"total_tokens":2000000000000}`},
		{"negative",
			`{"prompt_tokens":-1,"completion_tokens":-1,"total_tokens":-2}`, `{"prompt_tokens":-1,"completion_tokens":-1,"total_tokens":-2}`,
			`{"promptTokenCount":-1,"candidatesTokenCount":-1,"totalTokenCount":-2}`, `{"prompt_tokens":-1,"completion_tokens":-1,"total_tokens":-2}`},
	} {
		t.Run(tc.usage, func(t *testing.T) {
			h := []string{"x-stub-usage", tc.usage}
			check := func(where string, body []byte, key, want string) {
				t.Helper()
				got := member(t, body, key)
				if (want == "") != (got == "") || (want != "" && !jsonEqual(t, []byte(got), want)) {
					t.Errorf("%s %s = %s, want %s", where, key, got, want)
				}
			}
			check("chat", post(t, st.url(OpenAI, "/v1/chat/completions"), chatBody, h...).body, "usage", tc.chat)
			check("seed", post(t, st.url(Qwen, "/api/v1/qwen/chat"), `{"prompt":"abcd"}`, h...).body, "usage", tc.seed)
			check("gemini", post(t, st.url(Gemini, "/v1beta/models/g:generateContent"), geminiBody, h...).body, "usageMetadata", tc.gemini)

			events, err := readSSE(openStream(t, st.url(OpenAI, "/v1/chat/completions"), chatStream, "text/event-stream", h...))
			if err != nil || events[len(events)-1] != "[DONE]" {
				t.Fatalf("chat stream %q, %v", events, err)
			}
			last := []byte(events[len(events)-2])
			if tc.chatLast == "" {
				if member(t, last, "usage") != "null" {
					t.Errorf("chat stream with usage %s ends with %s, want no usage chunk", tc.usage, last)
				}
			} else {
				check("chat stream", last, "usage", tc.chatLast)
			}
			events, err = readSSE(openStream(t, st.url(Gemini, "/v1beta/models/g:streamGenerateContent?alt=sse"), geminiBody, "text/event-stream", h...))
			if err != nil || len(events) != 2 {
				t.Fatalf("gemini stream %q, %v", events, err)
			}
			check("gemini stream", []byte(events[1]), "usageMetadata", tc.gemini)
		})
	}
}

func TestLatencyKnob(t *testing.T) {
	st := start(t, nil)
	begin := time.Now()
	a := post(t, st.url(OpenAI, "/v1/chat/completions"), chatBody, "x-stub-latency", "200ms")
	if d := time.Since(begin); a.status != 200 || d < 200*time.Millisecond {
		t.Errorf("answer %d after %v, want 200 after at least 200ms", a.status, d)
	}
}

// A knob header out of its bounds is the provider's 400, naming it.
func TestBadKnobHeaders(t *testing.T) {
	st := start(t, nil)
	for _, h := range [][2]string{
		{"x-stub-latency", "abc"}, {"x-stub-latency", "-1s"}, {"x-stub-latency", "11m"},
		{"x-stub-ttft", "1"}, {"x-stub-chunk-delay", "1h"},
		{"x-stub-error-rate", "2"}, {"x-stub-error-rate", "NaN"},
		{"x-stub-status", "200"}, {"x-stub-status", "600"}, {"x-stub-status", "x"},
		{"x-stub-retry-after", "-1"}, {"x-stub-fail-first", "1001"}, {"x-stub-truncate", "-1"},
		{"x-stub-usage", "bogus"},
	} {
		for _, p := range []struct{ provider, url, body, want string }{
			{OpenAI, "/v1/chat/completions", chatBody, `"type":"invalid_request_error"`},
			{Gemini, "/v1beta/models/g:generateContent", geminiBody, `"status":"INVALID_ARGUMENT"`},
		} {
			a := post(t, st.url(p.provider, p.url), p.body, h[0], h[1])
			if a.status != http.StatusBadRequest || !strings.Contains(string(a.body), h[0]+": want") || !strings.Contains(string(a.body), p.want) {
				t.Errorf("%s %s: %s = %d %s, want 400 naming it", p.provider, h[0], h[1], a.status, a.body)
			}
		}
	}
}

func TestKnobFlags(t *testing.T) {
	parse := func(args ...string) (Knobs, error) {
		k := DefaultConfig().Knobs
		fs := flag.NewFlagSet("t", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		k.RegisterFlags(fs)
		return k, fs.Parse(args)
	}
	got, err := parse("-latency", "250ms", "-ttft", "1s", "-chunk-delay", "5ms", "-error-rate", "0.5", "-status", "429",
		"-retry-after", "9", "-fail-first", "2", "-truncate", "4", "-usage", "absurd")
	want := Knobs{Latency: 250 * time.Millisecond, TTFT: time.Second, ChunkDelay: 5 * time.Millisecond, ErrorRate: 0.5,
		Status: 429, RetryAfter: 9, FailFirst: 2, Truncate: 4, Usage: UsageAbsurd}
	if err != nil || got != want {
		t.Errorf("parse = %+v, %v; want %+v", got, err, want)
	}
	for _, args := range [][]string{{"-latency", "x"}, {"-status", "200"}, {"-usage", "lots"}, {"-error-rate", "-1"}} {
		if _, err := parse(args...); err == nil || !strings.Contains(err.Error(), args[0]) {
			t.Errorf("parse(%q) = %v, want an error naming the flag", args, err)
		}
	}
	var usage strings.Builder
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	k := DefaultConfig().Knobs
	k.RegisterFlags(fs)
	fs.SetOutput(&usage)
	fs.PrintDefaults()
	if !strings.Contains(usage.String(), "header x-stub-latency") || !strings.Contains(usage.String(), "(default 1)") {
		t.Errorf("usage does not name the headers or the defaults:\n%s", usage.String())
	}
}
