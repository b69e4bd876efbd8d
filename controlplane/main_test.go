package controlplane

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"io"
	"log/slog"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/leakytokens/leaky/internal/policy"
	"github.com/leakytokens/leaky/internal/testenv"
)

// cp is a control plane running for one test.
type cp struct {
	*Server
	t    *testing.T
	logs *syncBuffer
	base string // the HTTP base URL
}

// syncBuffer is a log sink safe for concurrent writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// issuer publishes a JWKS and mints tokens signed with its key, playing
// authz for the admin API.
type issuer struct {
	srv *httptest.Server
	key *rsa.PrivateKey
	kid string
}

func newIssuer(t *testing.T) *issuer {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	is := &issuer{key: key, kid: "test-kid"}
	is.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		json.NewEncoder(w).Encode(map[string]any{"keys": []map[string]string{{"kty": "RSA", "use": "sig", "alg": "RS256",
			"kid": is.kid, "n": base64.RawURLEncoding.EncodeToString(key.N.Bytes()),
			"e": base64.RawURLEncoding.EncodeToString(big.NewInt(int64(key.E)).Bytes())}}})
	}))
	t.Cleanup(is.srv.Close)
	return is
}

func (is *issuer) url() string { return is.srv.URL + "/.well-known/jwks.json" }

// token mints a token with roles, valid for an hour, changed by mutate.
func (is *issuer) token(t *testing.T, roles []string, mutate func(jwt.MapClaims)) string {
	t.Helper()
	now := time.Now()
	c := jwt.MapClaims{"iss": "leaky-tokens-auth", "aud": []string{"leaky-tokens"}, "sub": "user-1",
		"iat": now.Unix(), "exp": now.Add(time.Hour).Unix(), "roles": roles}
	if mutate != nil {
		mutate(c)
	}
	tok := jwt.NewWithClaims(jwt.SigningMethodRS256, c)
	tok.Header["kid"] = is.kid
	s, err := tok.SignedString(is.key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// testConfig is a configuration on free loopback ports with the policy at
// path (empty: the embedded example) and admin tokens from is.
func testConfig(path string, is *issuer) Config {
	c := DefaultConfig()
	c.XDSAddr, c.HTTPAddr, c.PolicyPath = "127.0.0.1:0", "127.0.0.1:0", path
	c.JWKSURL = is.url()
	c.ShutdownGrace = 2 * time.Second
	return c
}

// writePolicy writes data to a new policy file and returns its path.
func writePolicy(t *testing.T, data []byte) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "policy.yaml")
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// startCP runs a control plane until the test ends (with the real
// translator unless deps names another).
func startCP(t *testing.T, cfg Config, deps Deps) *cp {
	t.Helper()
	logs := &syncBuffer{}
	s, err := New(cfg, slog.New(slog.NewJSONHandler(logs, nil)), deps)
	if err != nil {
		t.Fatalf("New() = %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	stopped := false
	c := &cp{Server: s, t: t, logs: logs, base: "http://" + s.HTTPAddr()}
	t.Cleanup(func() {
		if stopped {
			return
		}
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run() = %v, want nil", err)
			}
		case <-time.After(wait):
			t.Errorf("Run() did not return within %s of cancellation", wait)
		}
		if t.Failed() {
			t.Logf("control plane logs:\n%s", logs.String())
		}
	})
	return c
}

// call makes an HTTP request with a bearer token (when not "") and a JSON
// body (when not nil), and returns the status and the body.
func (c *cp) call(method, path, token string, body []byte) (int, string) {
	c.t.Helper()
	req := c.request(method, path, body)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	return c.do(req)
}

// request builds a request to the control plane, with a JSON body when
// body is not nil.
func (c *cp) request(method, path string, body []byte) *http.Request {
	c.t.Helper()
	var r io.Reader
	if body != nil {
		r = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, c.base+path, r)
	if err != nil {
		c.t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	return req
}

// do sends req and returns the status and the body.
func (c *cp) do(req *http.Request) (int, string) {
	c.t.Helper()
	resp, err := (&http.Client{Timeout: wait}).Do(req)
	if err != nil {
		c.t.Fatalf("%s %s: %v", req.Method, req.URL.Path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// pushes is the pushes counter.
// pushes is the push counter, read after taking the pipeline's lock
// (through Version): a push whose answer a client has already received is
// counted by then (the counter moves after SetSnapshot answered the
// watches, under that lock).
func (c *cp) pushes() float64 {
	c.Version()
	return testutil.ToFloat64(c.m.pushes)
}

// eventually polls cond every 20 ms until it holds, failing after wait.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(wait); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("timed out after %s waiting for %s", wait, what)
}

// editFile replaces old by new in the file at path (atomically, as an
// editor would save it), failing when old is not there.
func editFile(t *testing.T, path, old, new string) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(data), old) {
		t.Fatalf("%s does not contain %q", path, old)
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(strings.Replace(string(data), old, new, 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// exampleFreeStar is the example's free tier's "*" bucket, as written.
const exampleFreeStar = `"*":    {capacity: 2000,  leak_rate: 20}`

func TestMain(m *testing.M) {
	if !bytes.Contains(policy.Example(), []byte(exampleFreeStar)) {
		panic("the example policy no longer has " + exampleFreeStar + ": update the tests")
	}
	os.Exit(testenv.Main(m))
}
