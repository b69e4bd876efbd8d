package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// e2ePolicy is the end-to-end tests' policy: the example's tiers and pools
// with buckets that drain one token in 1000 s, so a bucket's remaining
// tokens move only when a request charges it and a comparison before and
// after a call is exact; and gateway time limits generous enough for a
// loaded machine (the example's 20 ms ratelimit call would fail there).
const e2ePolicy = `domain: leaky-tokens
failure_mode: deny
default_tier: free
tiers:
  free:
    priority: 10
    roles: [USER]
    buckets:
      "*":    {capacity: 2000, leak_rate: 0.001}
      openai: {capacity: 4000, leak_rate: 0.001}
  pro:
    priority: 50
    roles: [PRO]
    buckets:
      "*":    {capacity: 20000, leak_rate: 0.001}
  admin:
    priority: 100
    roles: [ADMIN]
    buckets:
      "*":    {capacity: 40000, leak_rate: 0.001}
organisations:
  "*": {capacity: 100000, leak_rate: 0.001}
providers:
  openai: {capacity: 1000000, leak_rate: 0.001}
  gemini: {capacity: 1000000, leak_rate: 0.001}
  qwen:   {capacity: 500000,  leak_rate: 0.001}
gateway:
  authz_failure_mode: deny
  ratelimit_failure_mode: deny
  authz_timeout: 10s
  ratelimit_timeout: 10s
  retries: 2
  provider_paths:
    qwen: /compatible-mode/
`

// e2eAdminPassword is the bootstrap admin's password in every stack.
const e2eAdminPassword = "e2e-admin-password"

// pollBound bounds every wait for something asynchronous: generous, for a
// machine running every test at once.
const pollBound = 60 * time.Second

// stack is `leaky dev` for the end-to-end tests: every piece on a free
// loopback port, on a policy file of the test's own, each piece run under
// a context of its own so that a test can stop one (authz, the control
// plane) and start a new control plane on the same addresses.
type stack struct {
	t      *testing.T
	d      *dev
	f      *devFlags
	pieces map[string]*piece
	logs   *syncBuffer
	client *http.Client

	policy  string   // the policy file's path
	gateway string   // http://host:port of the gateway stand-in
	args    []string // dev's flags besides the addresses and -config
}

// piece is one running runner of dev.
type piece struct {
	stop context.CancelFunc
	done chan error
}

// newStack starts the request path on a policy file holding policyYAML,
// with dev's flags args besides, and waits until the gateway has applied
// a configuration. Everything stops when the test ends; the logs are
// shown when it failed.
func newStack(t *testing.T, policyYAML string, args ...string) *stack {
	t.Helper()
	s := &stack{t: t, pieces: map[string]*piece{}, logs: &syncBuffer{}, client: &http.Client{Timeout: pollBound}, args: args}
	s.policy = filepath.Join(t.TempDir(), "policy.yaml")
	if err := os.WriteFile(s.policy, []byte(policyYAML), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if s.d != nil {
			s.d.close()
		}
		s.client.CloseIdleConnections()
		if t.Failed() {
			t.Logf("logs of the stack:\n%s", s.logs.String())
		}
	})
	t.Cleanup(s.stopAll) // runs first: the pieces stop, then close releases
	s.start()
	for _, r := range s.d.runners {
		s.startPiece(r.name, r.run)
	}
	s.gateway = "http://" + s.d.gatewayAddr
	s.waitFor("the gateway to apply a configuration", func() (bool, string) {
		r, err := s.client.Get("http://" + s.d.gwAdmin + "/ready")
		if err != nil {
			return false, err.Error()
		}
		r.Body.Close()
		return r.StatusCode == http.StatusOK, r.Status
	})
	return s
}

// start binds every piece as `leaky dev` does.
func (s *stack) start() {
	s.t.Helper()
	e := testEnv(io.Discard, io.Discard, map[string]string{"LEAKY_ADMIN_PASSWORD": e2eAdminPassword})
	e.logger = slog.New(slog.NewTextHandler(s.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	f, err := parseDevFlags(e, devArgs(append([]string{"-config", s.policy}, s.args...)...)[1:])
	if err != nil {
		s.t.Fatal(err)
	}
	d := &dev{e: e}
	if err := d.start(s.t.Context(), f); err != nil {
		d.close()
		s.t.Fatalf("dev: %v", err)
	}
	s.f, s.d = f, d
}

// in is s for the subtest t: the same pieces, failures reported to t
// (FailNow must run on t's own goroutine).
func (s *stack) in(t *testing.T) *stack {
	c := *s
	c.t = t
	return &c
}

// startPiece runs one piece of the stack until stopPiece or the test's end.
func (s *stack) startPiece(name string, run func(context.Context) error) {
	ctx, cancel := context.WithCancel(context.Background())
	p := &piece{stop: cancel, done: make(chan error, 1)}
	s.pieces[name] = p
	go func() { p.done <- run(ctx) }()
}

// stopPiece stops one piece and waits until its Run has returned (its
// listeners closed).
func (s *stack) stopPiece(name string) {
	s.t.Helper()
	p := s.pieces[name]
	if p == nil {
		s.t.Fatalf("no piece %q running", name)
	}
	delete(s.pieces, name)
	p.stop()
	select {
	case err := <-p.done:
		if err != nil {
			s.t.Errorf("%s stopped with %v", name, err)
		}
	case <-time.After(pollBound):
		s.t.Fatalf("%s did not stop within %s", name, pollBound)
	}
}

func (s *stack) stopAll() {
	for name := range s.pieces {
		s.stopPiece(name)
	}
}

// startControlplaneAgain starts, after stopPiece("controlplane"), a new
// control plane on the stopped one's xDS and HTTP addresses and the same
// policy file, as `leaky dev` binds it.
func (s *stack) startControlplaneAgain() {
	s.t.Helper()
	if s.pieces["controlplane"] != nil {
		s.t.Fatal("the control plane is running: stop it first")
	}
	httpAddr := s.d.cp.HTTPAddr()
	s.f.cp.HTTPAddr = httpAddr
	// The old listeners are closed; a bind can still meet a port in the
	// kernel's hands for a moment, so it is retried within the bound.
	s.waitFor("a new control plane to bind "+httpAddr+" and "+s.d.xds, func() (bool, string) {
		cp, err := s.d.newControlplane(s.f)
		if err != nil {
			return false, err.Error()
		}
		s.d.cp = cp
		return true, ""
	})
	s.d.closers = append(s.d.closers, s.d.cp.Close)
	s.startPiece("controlplane", s.d.cp.Run)
}

// waitFor polls cond until it holds, failing the test after pollBound
// with cond's last account of why not.
func (s *stack) waitFor(what string, cond func() (bool, string)) {
	s.t.Helper()
	var why string
	for deadline := time.Now().Add(pollBound); ; time.Sleep(50 * time.Millisecond) {
		var ok bool
		if ok, why = cond(); ok {
			return
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("waited %s for %s; last: %s", pollBound, what, why)
		}
	}
}

// answer is an HTTP response, its body read.
type answer struct {
	status int
	header http.Header
	body   string
}

func (a answer) String() string {
	return fmt.Sprintf("%d %v %s", a.status, a.header, a.body)
}

// do sends one request and reads the answer. Header names are sent as
// written (not canonicalised), so a test can send x_leaky_tier.
func (s *stack) do(method, url string, header map[string]string, body string) answer {
	s.t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		s.t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = []string{v}
	}
	if body != "" && req.Header.Get("Content-Type") == "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := s.client.Do(req)
	if err != nil {
		s.t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		s.t.Fatalf("%s %s: reading the body: %v", method, url, err)
	}
	return answer{resp.StatusCode, resp.Header, string(b)}
}

// decode sends a request that must answer want and decodes its JSON body.
func (s *stack) decode(want int, method, url string, header map[string]string, body string, into any) {
	s.t.Helper()
	a := s.do(method, url, header, body)
	if a.status != want {
		s.t.Fatalf("%s %s: want %d, got %s", method, url, want, a)
	}
	if into != nil {
		if err := json.Unmarshal([]byte(a.body), into); err != nil {
			s.t.Fatalf("%s %s: %v in %s", method, url, err, a.body)
		}
	}
}

// jsonBody marshals v.
func jsonBody(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(bytes.TrimSpace(b))
}
