package controlplane

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/leakytokens/leaky/authz"
	"github.com/leakytokens/leaky/authz/store"
	"github.com/leakytokens/leaky/internal/policy"
)

// startAuthz runs a real authz service (memory store) until the test ends
// and returns its HTTP base URL; its bootstrap admin is admin /
// admin-password-123.
func startAuthz(t *testing.T) string {
	t.Helper()
	cfg := authz.DefaultConfig()
	cfg.GRPCAddr, cfg.HTTPAddr = "127.0.0.1:0", "127.0.0.1:0"
	cfg.SigningSecret = "test-signing-secret-0123456789"
	cfg.Argon2MemoryKiB, cfg.Argon2Time = 64, 1
	cfg.AdminUsername, cfg.AdminPassword = "admin", "admin-password-123"
	cfg.ShutdownGrace = 2 * time.Second
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	svc, err := authz.New(ctx, cfg, discard(), store.NewMemory())
	if err != nil {
		t.Fatalf("authz.New() = %v", err)
	}
	runCtx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- svc.Run(runCtx) }()
	t.Cleanup(func() {
		stop()
		select {
		case <-done:
		case <-time.After(wait):
			t.Errorf("authz did not stop within %s", wait)
		}
	})
	return "http://" + svc.HTTPAddr()
}

// authzToken posts body to an authz auth endpoint and returns the token.
func authzToken(t *testing.T, url string, body any) string {
	t.Helper()
	b, _ := json.Marshal(body)
	resp, err := (&http.Client{Timeout: wait}).Post(url, "application/json", bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out struct{ Token string }
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || out.Token == "" || resp.StatusCode >= 300 {
		t.Fatalf("POST %s = %d, token %q, %v", url, resp.StatusCode, out.Token, err)
	}
	return out.Token
}

// The admin API accepts authz's own tokens, verified with the key set
// authz publishes: its bootstrap admin may, a registered user may not.
func TestAdminWithRealAuthz(t *testing.T) {
	az := startAuthz(t)
	cfg := testConfig(writePolicy(t, policy.Example()), newIssuer(t))
	cfg.JWKSURL = az + "/.well-known/jwks.json"
	c := startCP(t, cfg, Deps{})

	admin := authzToken(t, az+"/api/v1/auth/login", map[string]string{"username": "admin", "password": "admin-password-123"})
	user := authzToken(t, az+"/api/v1/auth/register", map[string]string{"username": "alice", "email": "alice@example.com", "password": "alice-password-123"})
	if code, body := c.call("GET", "/api/v1/admin/tiers", admin, nil); code != 200 {
		t.Errorf("GET tiers as authz's admin = %d %s, want 200", code, body)
	}
	if code, body := c.call("GET", "/api/v1/admin/tiers", user, nil); code != 403 {
		t.Errorf("GET tiers as a registered user = %d %s, want 403", code, body)
	}
	tampered := admin[:len(admin)-4] + "AAAA"
	if code, body := c.call("GET", "/api/v1/admin/tiers", tampered, nil); code != 401 {
		t.Errorf("GET tiers with a tampered admin token = %d %s, want 401", code, body)
	}
}
