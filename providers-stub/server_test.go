package providersstub

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// stub is a running Server for one test, stopped at cleanup.
type stub struct {
	*Server
	cancel context.CancelFunc
	done   chan error
}

// start runs a Server with every provider on a free port; edit changes the
// configuration first.
func start(t *testing.T, edit func(*Config)) *stub {
	t.Helper()
	cfg := DefaultConfig()
	cfg.OpenAIAddr, cfg.GeminiAddr, cfg.QwenAddr = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"
	if edit != nil {
		edit(&cfg)
	}
	s, err := New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	st := &stub{Server: s, cancel: cancel, done: make(chan error, 1)}
	go func() { st.done <- s.Run(ctx) }()
	t.Cleanup(func() { st.stop(t) })
	return st
}

// stop cancels Run and waits for it (once).
func (st *stub) stop(t *testing.T) {
	t.Helper()
	if st.cancel == nil {
		return
	}
	// A connection the client dialled but never used is one net/http's
	// Shutdown waits 5 s for; close those first.
	http.DefaultClient.CloseIdleConnections()
	st.cancel()
	st.cancel = nil
	if err := <-st.done; err != nil {
		t.Errorf("Run = %v, want nil", err)
	}
}

func (st *stub) url(provider, path string) string {
	return "http://" + st.Addrs()[provider] + path
}

// answer is a whole HTTP answer.
type answer struct {
	status int
	header http.Header
	body   []byte
}

// do sends method url with body and headers (name, value pairs) and reads
// the whole answer.
func do(t *testing.T, method, url, body string, headers ...string) answer {
	t.Helper()
	a, err := fetch(method, url, body, headers...)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// fetch is do for a goroutine other than the test's.
func fetch(method, url, body string, headers ...string) (answer, error) {
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		return answer{}, err
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return answer{}, fmt.Errorf("%s %s: %w", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return answer{}, fmt.Errorf("%s %s: reading the body: %w", method, url, err)
	}
	return answer{resp.StatusCode, resp.Header, b}, nil
}

func post(t *testing.T, url, body string, headers ...string) answer {
	t.Helper()
	return do(t, http.MethodPost, url, body, headers...)
}

// decodeInto unmarshals a's body into v, failing the test otherwise.
func (a answer) decodeInto(t *testing.T, v any) {
	t.Helper()
	if err := json.Unmarshal(a.body, v); err != nil {
		t.Fatalf("answer %d %s: %v", a.status, a.body, err)
	}
}

// jsonEqual reports whether got is the JSON value want.
func jsonEqual(t *testing.T, got []byte, want string) bool {
	t.Helper()
	var g, w any
	if err := json.Unmarshal([]byte(want), &w); err != nil {
		t.Fatalf("want %s: %v", want, err)
	}
	return json.Unmarshal(got, &g) == nil && cmp.Equal(g, w)
}

// member returns the JSON of the top-level member key of the object body,
// "" when absent.
func member(t *testing.T, body []byte, key string) string {
	t.Helper()
	var m map[string]json.RawMessage
	if err := json.Unmarshal(body, &m); err != nil {
		t.Fatalf("%s: %v", body, err)
	}
	return string(m[key])
}

func TestAddrsNameEveryProviderServed(t *testing.T) {
	st := start(t, func(c *Config) { c.QwenAddr = "" })
	addrs := st.Addrs()
	if len(addrs) != 2 || addrs[OpenAI] == "" || addrs[Gemini] == "" {
		t.Fatalf("Addrs() = %v, want openai and gemini only", addrs)
	}
	for p := range addrs {
		a := do(t, http.MethodGet, st.url(p, "/healthz"), "")
		var got map[string]string
		a.decodeInto(t, &got)
		if want := map[string]string{"status": "ok", "provider": p}; a.status != 200 || !cmp.Equal(got, want) {
			t.Errorf("GET %s /healthz = %d %v, want 200 %v", p, a.status, got, want)
		}
	}
}

func TestMetricsCountRequestsAndTokens(t *testing.T) {
	st := start(t, nil)
	post(t, st.url(OpenAI, "/v1/chat/completions"), `{"model":"m","messages":[{"role":"user","content":"abcdefgh"}],"max_tokens":3}`)
	post(t, st.url(OpenAI, "/v1/nope"), `{}`)
	post(t, st.url(Gemini, "/v1beta/models/g:generateContent"), `{}`)
	a := do(t, http.MethodGet, st.url(Qwen, "/metrics"), "") // one registry behind every listener
	for _, want := range []string{
		`leaky_stub_requests_total{api="chat",provider="openai",status="200"} 1`,
		`leaky_stub_requests_total{api="unknown",provider="openai",status="404"} 1`,
		`leaky_stub_requests_total{api="generate",provider="gemini",status="400"} 1`,
		`leaky_stub_tokens_total{kind="prompt",provider="openai"} 2`,
		`leaky_stub_tokens_total{kind="completion",provider="openai"} 3`,
	} {
		if !bytes.Contains(a.body, []byte(want)) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}

func TestConfigValidateNamesEveryProblem(t *testing.T) {
	c := DefaultConfig()
	c.OpenAIAddr, c.GeminiAddr, c.QwenAddr = "", "", ""
	c.CompletionTokens, c.MaxBodyBytes, c.FailFirstMemory, c.ShutdownGrace = 0, 10, 0, 0
	c.Knobs.ErrorRate = 2
	err := c.Validate()
	for _, want := range []string{"-error-rate", "-openai-addr", "-completion-tokens", "-max-body-bytes", "-fail-first-memory", "-shutdown-grace"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate() = %v, want it to name %s", err, want)
		}
	}
	if err := DefaultConfig().Validate(); err != nil {
		t.Errorf("DefaultConfig().Validate() = %v", err)
	}
}

// A request open when the stop begins finishes; one still open at the end
// of the grace is cut, and Run returns.
func TestStopIsGracefulThenBounded(t *testing.T) {
	t.Parallel() // it waits out a grace of 5 s
	st := start(t, func(c *Config) { c.ShutdownGrace = 5 * time.Second })
	finished := make(chan answer, 1)
	go func() {
		finished <- post(t, st.url(OpenAI, "/v1/chat/completions"),
			`{"model":"m","messages":[{"role":"user","content":"hi"}]}`, "x-stub-latency", "100ms")
	}()
	cut := make(chan error, 1)
	go func() {
		req, _ := http.NewRequest(http.MethodPost, st.url(Gemini, "/v1beta/models/g:generateContent"),
			strings.NewReader(`{"contents":[{"parts":[{"text":"x"}]}]}`))
		req.Header.Set("x-stub-latency", "10m")
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
			err = fmt.Errorf("answered %d", resp.StatusCode)
		}
		cut <- err
	}()
	waitFor(t, "two requests in flight", func() bool { return st.inflight.Running() == 2 })
	st.stop(t) // returns only once both handlers have
	if a := <-finished; a.status != http.StatusOK {
		t.Errorf("request open at the stop: %d %s, want 200", a.status, a.body)
	}
	if err := <-cut; err == nil || strings.HasPrefix(err.Error(), "answered") {
		t.Errorf("request still open after the grace: %v, want the connection cut", err)
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// Concurrent callers get the deterministic answers, and fail-first
// counts each request id's attempts apart.
func TestConcurrentCallersGetTheSameAnswers(t *testing.T) {
	st := start(t, nil)
	chatURL, chat := st.url(OpenAI, "/v1/chat/completions"), `{"model":"m","messages":[{"role":"user","content":"the same prompt"}],"max_tokens":7}`
	sseURL, gemini := st.url(Gemini, "/v1beta/models/g:streamGenerateContent?alt=sse"), `{"contents":[{"parts":[{"text":"same"}]}]}`
	want := post(t, chatURL, chat)
	wantStream := post(t, sseURL, gemini)
	var wg sync.WaitGroup
	for i := range 32 {
		wg.Go(func() {
			id := fmt.Sprint("r", i)
			for attempt := 1; attempt <= 3; attempt++ {
				a, err := fetch(http.MethodPost, chatURL, chat, "x-request-id", id, "x-stub-fail-first", "2")
				switch {
				case err != nil:
					t.Error(err)
				case attempt <= 2 && a.status != http.StatusServiceUnavailable:
					t.Errorf("attempt %d of %s: %d, want 503", attempt, id, a.status)
				case attempt == 3 && !equalExceptIDs(t, want.body, a.body):
					t.Errorf("attempt 3 of %s = %s, want %s", id, a.body, want.body)
				}
			}
			a, err := fetch(http.MethodPost, sseURL, gemini)
			if err != nil || !equalSSEExceptIDs(t, wantStream.body, a.body) {
				t.Errorf("gemini stream = %s, %v; want %s", a.body, err, wantStream.body)
			}
		})
	}
	wg.Wait()
}
