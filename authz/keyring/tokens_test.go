package keyring

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/leakytokens/leaky/authz/store"
)

func newTestTokens(t *testing.T) (*Tokens, *time.Time) {
	t.Helper()
	clock := time.Now()
	now := func() time.Time { return clock }
	ring := newTestRing(t, store.NewMemory(), "secret", now)
	return NewTokens(ring, TokenOptions{Issuer: "leaky-tokens-auth", Audience: "leaky-tokens", TTL: 15 * time.Minute, Leeway: 30 * time.Second, Now: now}), &clock
}

// b64 encodes a JSON value as a JWT segment.
func b64(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

func TestTokensRoundTrip(t *testing.T) {
	tk, _ := newTestTokens(t)
	raw, err := tk.Issue(Claims{RegisteredClaims: jwt.RegisteredClaims{Subject: "u1"}, Roles: []string{"USER"}, Orgs: []string{"acme"}})
	if err != nil {
		t.Fatal(err)
	}
	c, err := tk.Verify(raw)
	if err != nil {
		t.Fatalf("verify(issue()) = %v", err)
	}
	if c.Subject != "u1" || c.ID == "" || c.ExpiresAt == nil || c.IssuedAt == nil || len(c.Orgs) != 1 {
		t.Errorf("verify(issue()) = %+v, want sub, jti, exp, iat and orgs", c)
	}
}

func TestTokensRefuse(t *testing.T) {
	tk, clock := newTestTokens(t)
	set := tk.ring.Set()
	now := *clock
	good := func() map[string]any {
		return map[string]any{"sub": "u1", "iss": tk.issuer, "aud": []string{tk.audience},
			"exp": now.Add(time.Minute).Unix(), "iat": now.Unix(), "jti": "j", "roles": []string{"ADMIN"}}
	}
	sign := func(claims map[string]any, header map[string]any) string {
		tok := jwt.NewWithClaims(jwt.SigningMethodRS256, jwt.MapClaims(claims))
		tok.Header["kid"] = set.signKID
		for k, v := range header {
			tok.Header[k] = v
		}
		s, err := tok.SignedString(set.sign)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	with := func(k string, v any) string {
		c := good()
		if v == nil {
			delete(c, k)
		} else {
			c[k] = v
		}
		return sign(c, nil)
	}
	unsigned := func(alg string) string {
		return b64(t, map[string]any{"alg": alg, "typ": "JWT", "kid": set.signKID}) + "." + b64(t, good()) + "."
	}
	// RS256 → HS256 confusion: HMAC-signed with the public key's bytes.
	pubDER, _ := x509.MarshalPKIXPublicKey(&set.sign.PublicKey)
	hs := func(key []byte) string {
		tok := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims(good()))
		tok.Header["kid"] = set.signKID
		s, _ := tok.SignedString(key)
		return s
	}
	ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	es := jwt.NewWithClaims(jwt.SigningMethodES256, jwt.MapClaims(good()))
	es.Header["kid"] = set.signKID
	esTok, _ := es.SignedString(ecKey)
	valid := sign(good(), nil)
	parts := strings.Split(valid, ".")
	tampered := parts[0] + "." + b64(t, map[string]any{"sub": "admin", "iss": tk.issuer, "aud": tk.audience, "exp": now.Add(time.Hour).Unix(), "iat": now.Unix()}) + "." + parts[2]
	sig := []byte(parts[2])
	sig[10] ^= 1
	flipped := parts[0] + "." + parts[1] + "." + string(sig)

	tests := []struct{ name, token string }{
		{"alg none", unsigned("none")},
		{"alg None", unsigned("None")},
		{"alg NONE", unsigned("NONE")},
		{"alg nOnE", unsigned("nOnE")},
		{"HS256 with public key PEM bytes", hs([]byte(pemPublic(pubDER)))},
		{"HS256 with public key DER", hs(pubDER)},
		{"ES256 with another key", esTok},
		{"kid path traversal", sign(good(), map[string]any{"kid": "../../dev/null"})},
		{"kid sql", sign(good(), map[string]any{"kid": "' OR 1=1--"})},
		{"kid url", sign(good(), map[string]any{"kid": "https://evil.example/jwks.json"})},
		{"kid huge", sign(good(), map[string]any{"kid": strings.Repeat("k", 10240)})},
		{"kid missing", sign(good(), map[string]any{"kid": nil})},
		{"kid number", sign(good(), map[string]any{"kid": 7})},
		{"expired", with("exp", now.Add(-time.Minute).Unix())},
		{"expired beyond leeway edge", with("exp", now.Add(-31*time.Second).Unix())},
		{"not yet valid", with("nbf", now.Add(time.Minute).Unix())},
		{"issued in the future", with("iat", now.Add(time.Minute).Unix())},
		{"missing exp", with("exp", nil)},
		{"wrong issuer", with("iss", "someone-else")},
		{"missing issuer", with("iss", nil)},
		{"wrong audience", with("aud", []string{"other"})},
		{"missing audience", with("aud", nil)},
		{"missing subject", with("sub", nil)},
		{"tampered payload", tampered},
		{"tampered signature", flipped},
		{"garbage", "not.a.jwt"},
		{"empty", ""},
	}
	if _, err := tk.Verify(valid); err != nil {
		t.Fatalf("verify(valid) = %v, want nil", err)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if c, err := tk.Verify(tt.token); err == nil {
				t.Errorf("verify(%s) = %+v, nil; want an error", tt.name, c)
			} else if tt.token != "" && strings.Contains(err.Error(), tt.token) {
				t.Errorf("verify(%s) error contains the token", tt.name)
			}
		})
	}
}

func pemPublic(der []byte) string {
	return "-----BEGIN PUBLIC KEY-----\n" + base64.StdEncoding.EncodeToString(der) + "\n-----END PUBLIC KEY-----\n"
}
