package ratelimit

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	providersstub "github.com/leakytokens/leaky/providers-stub"
)

// fakeProvider is an httptest provider answering with handle, counting
// calls.
func fakeProvider(t *testing.T, handle http.HandlerFunc) (string, *atomic.Int64) {
	t.Helper()
	var calls atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		_, _ = io.Copy(io.Discard, r.Body) // then a client's abort cancels r's context
		handle(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv.URL, &calls
}

// Each provider failure is 502 (or 503 when the provider was not called)
// and leaves every balance as it was; a missing or absurd usage settles
// at the estimate.
func TestTokensConsumeProviderFailures(t *testing.T) {
	ok := `{"id":"x","provider":"openai","message":"hi","usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7}}`
	block := make(chan struct{})
	t.Cleanup(func() { close(block) })
	cases := []struct {
		name      string
		handle    http.HandlerFunc
		status    int
		calls     int64 // how many attempts the provider saw
		remaining int64 // the user's bucket after it (capacity 4000, tokens 100)
	}{
		{"ok", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte(ok)) }, 200, 1, 4000 - 7},
		{"5xx retried then failed", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(503) }, 502, 3, 4000},
		{"429 not retried", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(429) }, 502, 1, 4000},
		{"400 not retried", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(400) }, 502, 1, 4000},
		{"garbage", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("<html>oops")) }, 502, 1, 4000},
		{"timeout", func(w http.ResponseWriter, r *http.Request) {
			select {
			case <-block:
			case <-r.Context().Done():
			case <-time.After(time.Minute):
			}
		}, 502, 1, 4000},
		{"missing usage", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte(`{"id":"x"}`)) }, 200, 1, 4000 - 100},
		{"absurd usage", func(w http.ResponseWriter, _ *http.Request) {
			_, _ = w.Write([]byte(`{"usage":{"prompt_tokens":1000000000000,"completion_tokens":1000000000000,"total_tokens":2000000000000}}`))
		}, 200, 1, 4000 - 100},
		{"negative usage", func(w http.ResponseWriter, _ *http.Request) {
			_, _ = w.Write([]byte(`{"usage":{"prompt_tokens":-1,"completion_tokens":-1,"total_tokens":-2}}`))
		}, 200, 1, 4000 - 100},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			url, calls := fakeProvider(t, c.handle)
			e := startTokens(t, providersstub.Knobs{}, func(cfg *Config) {
				cfg.Tokens.ProviderURLs = map[string]string{"openai": url}
				cfg.Tokens.ProviderTimeout = 2 * time.Second // the timeout case waits for it
			})
			user := uuid.NewString()
			a := e.do(t, "POST", "/api/v1/tokens/consume", e.token(t, user, []string{"USER"}),
				`{"userId":"`+user+`","provider":"openai","tokens":100}`)
			if a.status != c.status || calls.Load() != c.calls {
				t.Fatalf("got %d after %d calls (%s), want %d after %d", a.status, calls.Load(), a.body, c.status, c.calls)
			}
			if a.status != 200 && a.json(t)["message"] != "provider call failed" {
				t.Fatalf("body %s", a.body)
			}
			// The bucket leaks 40 tokens/s: allow for the time passed.
			if got := e.userRemaining(t, user); got < c.remaining || got > c.remaining+400 {
				t.Fatalf("remaining %d, want %d", got, c.remaining)
			}
		})
	}
}

// The real stub failing the first attempt of each request (503) is
// retried and answers.
func TestTokensConsumeRetriesStub(t *testing.T) {
	e := startTokens(t, providersstub.Knobs{FailFirst: 1}, nil)
	user := uuid.NewString()
	a := e.do(t, "POST", "/api/v1/tokens/consume", e.token(t, user, []string{"USER"}), `{"userId":"`+user+`","provider":"openai","tokens":50,"prompt":"retry me"}`)
	if a.status != 200 {
		t.Fatalf("got %d %s", a.status, a.body)
	}
}

func TestProviderBreaker(t *testing.T) {
	var now atomic.Int64
	b := &breaker{threshold: 3, coolDown: time.Minute, now: func() time.Time { return time.Unix(now.Load(), 0) }}
	for range 3 {
		if !b.allow() {
			t.Fatal("closed breaker refused")
		}
		b.record(false)
	}
	if b.allow() {
		t.Fatal("open breaker allowed a call")
	}
	now.Add(61)
	if !b.allow() {
		t.Fatal("no half-open probe after the cool-down")
	}
	if b.allow() {
		t.Fatal("a second call during the probe")
	}
	b.record(false) // the probe failed: open again
	if b.allow() {
		t.Fatal("breaker closed after a failed probe")
	}
	now.Add(61)
	if !b.allow() {
		t.Fatal("no probe")
	}
	b.record(true)
	for range 2 { // closed: every call passes, not one probe
		if !b.allow() {
			t.Fatal("breaker not closed after a good probe")
		}
	}
}

// Consecutive failures open the circuit: the provider is not called and
// the consume is 503.
func TestProviderCircuitAndBulkhead(t *testing.T) {
	url, calls := fakeProvider(t, func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(500) })
	p := newProviderClient(map[string]string{"openai": url}, time.Second, 1)
	p.backoff = time.Millisecond
	for range 5 {
		if _, err := p.Chat(context.Background(), "openai", "x", nil); err == nil {
			t.Fatal("no error from a failing provider")
		}
	}
	before := calls.Load()
	if _, err := p.Chat(context.Background(), "openai", "x", nil); !errors.Is(err, errCircuitOpen) || calls.Load() != before {
		t.Fatalf("err %v after %d→%d calls, want the circuit open and no call", err, before, calls.Load())
	}
	// Bulkhead: one slot, held by a call in flight.
	release := make(chan struct{})
	entered := make(chan struct{}, 1)
	url2, _ := fakeProvider(t, func(w http.ResponseWriter, _ *http.Request) {
		entered <- struct{}{}
		<-release
		_, _ = w.Write([]byte(`{}`))
	})
	p = newProviderClient(map[string]string{"openai": url2}, 30*time.Second, 1)
	done := make(chan error, 1)
	go func() { _, err := p.Chat(context.Background(), "openai", "x", nil); done <- err }()
	<-entered
	if _, err := p.Chat(context.Background(), "openai", "x", nil); !errors.Is(err, errBulkheadFull) {
		t.Fatalf("second call: %v, want the bulkhead full", err)
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	// A refused connection is retried (and counted as attempts).
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "http://" + lis.Addr().String()
	lis.Close()
	p = newProviderClient(map[string]string{"openai": dead}, time.Second, 1)
	p.backoff = time.Millisecond
	if _, err := p.Chat(context.Background(), "openai", "x", nil); err == nil || !strings.Contains(err.Error(), "provider call") {
		t.Fatalf("dead provider: %v", err)
	}
}

// A call whose caller gives up (its context ends) is no provider failure:
// any number of them leave the circuit closed, and an abandoned half-open
// probe lets the next call probe instead of re-opening the circuit.
func TestProviderCallerCancelNotAFailure(t *testing.T) {
	entered := make(chan struct{}, 1)
	var block atomic.Bool
	url, _ := fakeProvider(t, func(w http.ResponseWriter, r *http.Request) {
		if block.Load() {
			entered <- struct{}{}
			<-r.Context().Done() // until the caller hangs up
			return
		}
		_, _ = w.Write([]byte(`{"usage":{"total_tokens":3}}`))
	})
	p := newProviderClient(map[string]string{"openai": url}, 30*time.Second, 4)
	var now atomic.Int64
	br := p.breakers["openai"]
	br.now = func() time.Time { return time.Unix(now.Load(), 0) }
	abandoned := func() {
		t.Helper()
		block.Store(true)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { _, err := p.Chat(ctx, "openai", "x", nil); done <- err }()
		select {
		case <-entered:
		case err := <-done:
			t.Fatalf("no call made: %v", err)
		}
		cancel()
		if err := <-done; err == nil {
			t.Fatal("an abandoned call returned no error")
		}
		block.Store(false)
	}
	for range 2 * br.threshold {
		abandoned()
	}
	if _, err := p.Chat(context.Background(), "openai", "x", nil); err != nil {
		t.Fatalf("after %d abandoned calls: %v, want the circuit closed", 2*br.threshold, err)
	}
	// Open it, let the cool-down pass: the probe is abandoned.
	for range br.threshold {
		br.record(false)
	}
	now.Add(int64(br.coolDown/time.Second) + 1)
	abandoned()
	if _, err := p.Chat(context.Background(), "openai", "x", nil); err != nil {
		t.Fatalf("after an abandoned probe: %v, want the next call to probe (and close the circuit)", err)
	}
}
