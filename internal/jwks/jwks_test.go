package jwks

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"math/big"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// publisher is an httptest JWKS endpoint whose keys a test may change; it
// counts the fetches.
type publisher struct {
	srv     *httptest.Server
	fetches atomic.Int64

	mu   sync.Mutex
	keys map[string]*rsa.PrivateKey
	body string // when set, served instead of the keys
}

func newPublisher(t *testing.T) *publisher {
	p := &publisher{keys: map[string]*rsa.PrivateKey{}}
	p.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		p.fetches.Add(1)
		p.mu.Lock()
		defer p.mu.Unlock()
		if p.body != "" {
			w.Write([]byte(p.body))
			return
		}
		var keys []map[string]string
		for kid, k := range p.keys {
			keys = append(keys, map[string]string{"kty": "RSA", "use": "sig", "alg": "RS256", "kid": kid,
				"n": base64.RawURLEncoding.EncodeToString(k.N.Bytes()),
				"e": base64.RawURLEncoding.EncodeToString(big.NewInt(int64(k.E)).Bytes())})
		}
		json.NewEncoder(w).Encode(map[string]any{"keys": keys})
	}))
	t.Cleanup(p.srv.Close)
	return p
}

func (p *publisher) add(t *testing.T, kid string) *rsa.PrivateKey {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	p.mu.Lock()
	p.keys[kid] = k
	p.mu.Unlock()
	return k
}

// clock is a settable clock.
type clock struct{ ns atomic.Int64 }

func (c *clock) Now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *clock) Advance(d time.Duration) { c.ns.Add(int64(d)) }

func sign(t *testing.T, key any, method jwt.SigningMethod, kid string, claims jwt.MapClaims) string {
	t.Helper()
	tok := jwt.NewWithClaims(method, claims)
	if kid != "" {
		tok.Header["kid"] = kid
	}
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func claims(now time.Time, mutate func(jwt.MapClaims)) jwt.MapClaims {
	c := jwt.MapClaims{"iss": "leaky-tokens-auth", "aud": []string{"leaky-tokens"}, "sub": "u1",
		"iat": now.Unix(), "exp": now.Add(time.Hour).Unix(), "roles": []string{"ADMIN", "USER"}}
	if mutate != nil {
		mutate(c)
	}
	return c
}

func newVerifier(p *publisher, c *clock) *Verifier {
	return New(Options{URL: p.srv.URL, Issuer: "leaky-tokens-auth", Audience: "leaky-tokens", Now: c.Now})
}

func TestVerify(t *testing.T) {
	p := newPublisher(t)
	key := p.add(t, "k1")
	other, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	c := &clock{}
	c.ns.Store(time.Now().UnixNano())
	now := c.Now()
	none, _ := jwt.NewWithClaims(jwt.SigningMethodNone, claims(now, nil)).SignedString(jwt.UnsafeAllowNoneSignatureType)
	tests := []struct {
		name    string
		token   string
		wantErr string // "" means valid
	}{
		{"valid", sign(t, key, jwt.SigningMethodRS256, "k1", claims(now, nil)), ""},
		{"bad signature", sign(t, other, jwt.SigningMethodRS256, "k1", claims(now, nil)), "verification error"},
		{"expired", sign(t, key, jwt.SigningMethodRS256, "k1", claims(now, func(m jwt.MapClaims) { m["exp"] = now.Add(-time.Minute).Unix() })), "expired"},
		{"no exp", sign(t, key, jwt.SigningMethodRS256, "k1", claims(now, func(m jwt.MapClaims) { delete(m, "exp") })), "exp claim is required"},
		{"wrong issuer", sign(t, key, jwt.SigningMethodRS256, "k1", claims(now, func(m jwt.MapClaims) { m["iss"] = "someone" })), "issuer"},
		{"wrong audience", sign(t, key, jwt.SigningMethodRS256, "k1", claims(now, func(m jwt.MapClaims) { m["aud"] = "other" })), "audience"},
		{"no subject", sign(t, key, jwt.SigningMethodRS256, "k1", claims(now, func(m jwt.MapClaims) { delete(m, "sub") })), "no subject"},
		{"no kid", sign(t, key, jwt.SigningMethodRS256, "", claims(now, nil)), "kid"},
		{"HS256 with the public modulus", sign(t, key.N.Bytes(), jwt.SigningMethodHS256, "k1", claims(now, nil)), "signing method"},
		{"alg none", none, "signing method"},
		{"not a token", "abc.def", "malformed"},
		{"empty", "", "malformed"},
	}
	v := newVerifier(p, c)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := v.Verify(context.Background(), tt.token)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("Verify() = %v, want a valid token", err)
				}
				if got.Subject != "u1" || !got.HasRole("admin") || got.HasRole("PRO") {
					t.Errorf("Verify() = sub %q roles %v, want u1 with ADMIN and not PRO", got.Subject, got.Roles)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Verify() = %v, want an error containing %q", err, tt.wantErr)
			}
			if errors.Is(err, ErrUnavailable) {
				t.Errorf("Verify() = %v, want a refusal, not ErrUnavailable", err)
			}
		})
	}
}

func TestVerifyRefetchesOnRotationAtMostOncePerInterval(t *testing.T) {
	p := newPublisher(t)
	k1 := p.add(t, "k1")
	c := &clock{}
	c.ns.Store(time.Now().UnixNano())
	v := newVerifier(p, c)
	ctx := context.Background()
	if _, err := v.Verify(ctx, sign(t, k1, jwt.SigningMethodRS256, "k1", claims(c.Now(), nil))); err != nil {
		t.Fatal(err)
	}
	if _, err := v.Verify(ctx, sign(t, k1, jwt.SigningMethodRS256, "k1", claims(c.Now(), nil))); err != nil {
		t.Fatal(err)
	}
	if got := p.fetches.Load(); got != 1 {
		t.Fatalf("fetches after two tokens of a known kid = %d, want 1", got)
	}
	// A made-up kid within the interval fetches nothing.
	if _, err := v.Verify(ctx, sign(t, k1, jwt.SigningMethodRS256, "made-up", claims(c.Now(), nil))); err == nil {
		t.Fatal("Verify(unknown kid) = nil, want an error")
	}
	if got := p.fetches.Load(); got != 1 {
		t.Fatalf("fetches after an unknown kid within the interval = %d, want 1", got)
	}
	// Rotation: authz publishes k2; once the interval has passed, a k2
	// token makes one fetch and verifies, and so does the next.
	k2 := p.add(t, "k2")
	c.Advance(6 * time.Second)
	for range 3 {
		if _, err := v.Verify(ctx, sign(t, k2, jwt.SigningMethodRS256, "k2", claims(c.Now(), nil))); err != nil {
			t.Fatalf("Verify(k2 after rotation) = %v", err)
		}
	}
	if got := p.fetches.Load(); got != 2 {
		t.Errorf("fetches after the rotation = %d, want 2", got)
	}
}

func TestVerifyKeySetUnavailable(t *testing.T) {
	p := newPublisher(t)
	k1 := p.add(t, "k1")
	c := &clock{}
	c.ns.Store(time.Now().UnixNano())
	url := p.srv.URL
	p.srv.Close() // authz is down
	v := New(Options{URL: url, Issuer: "leaky-tokens-auth", Audience: "leaky-tokens", Now: c.Now})
	for i := range 2 { // the second within the interval: no fetch, still unavailable
		_, err := v.Verify(context.Background(), sign(t, k1, jwt.SigningMethodRS256, "k1", claims(c.Now(), nil)))
		if !errors.Is(err, ErrUnavailable) {
			t.Fatalf("Verify() #%d with authz down = %v, want ErrUnavailable", i, err)
		}
	}
}

func TestParseRefusesBadDocuments(t *testing.T) {
	tests := []struct{ name, body string }{
		{"not json", "<html>"},
		{"no keys", `{"keys":[]}`},
		{"only other algorithms", `{"keys":[{"kty":"EC","kid":"a","crv":"P-256"}]}`},
		{"short modulus", `{"keys":[{"kty":"RSA","kid":"a","alg":"RS256","n":"AQAB","e":"AQAB"}]}`},
		{"bad base64", `{"keys":[{"kty":"RSA","kid":"a","alg":"RS256","n":"!!","e":"AQAB"}]}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got, err := parse([]byte(tt.body)); err == nil {
				t.Errorf("parse(%s) = %d keys, want an error", tt.body, len(got))
			}
		})
	}
}
