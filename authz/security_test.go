package authz

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/leakytokens/leaky/authz/oauth"
	"github.com/leakytokens/leaky/authz/store"
)

// TestCheckRefusesForgedJWTs runs the token attacks through the real gRPC
// Check (token_test.go covers each at the verifier).
func TestCheckRefusesForgedJWTs(t *testing.T) {
	ts := startService(t, nil, nil)
	u := ts.register(t, "victim")
	set := ts.ring.Set()
	key := signingKey(t, ts, set.KID())
	now := time.Now()
	claims := func() jwt.MapClaims {
		return jwt.MapClaims{"sub": u.UserID, "iss": ts.cfg.Issuer, "aud": ts.cfg.Audience,
			"exp": now.Add(time.Hour).Unix(), "iat": now.Unix(), "roles": []string{"ADMIN"}}
	}
	sign := func(m jwt.SigningMethod, key any, c jwt.MapClaims, kid any) string {
		tok := jwt.NewWithClaims(m, c)
		tok.Header["kid"] = kid
		s, err := tok.SignedString(key)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	enc := base64.RawURLEncoding.EncodeToString
	none := enc([]byte(`{"alg":"none","typ":"JWT"}`)) + "." + enc([]byte(`{"sub":"`+u.UserID+`","roles":["ADMIN"]}`)) + "."
	pub := key.PublicKey.N.Bytes()
	expired := claims()
	expired["exp"] = now.Add(-time.Hour).Unix()
	wrongAud := claims()
	wrongAud["aud"] = "someone-else"
	noExp := claims()
	delete(noExp, "exp")
	tests := map[string]string{
		"alg none":          none,
		"HS256 with pubkey": sign(jwt.SigningMethodHS256, pub, claims(), set.KID()),
		"kid traversal":     sign(jwt.SigningMethodRS256, key, claims(), "../../../../dev/null"),
		"expired":           sign(jwt.SigningMethodRS256, key, expired, set.KID()),
		"wrong audience":    sign(jwt.SigningMethodRS256, key, wrongAud, set.KID()),
		"missing exp":       sign(jwt.SigningMethodRS256, key, noExp, set.KID()),
	}
	// The control: the same key and claims, untampered, pass, so each
	// forgery below is refused for what it changes.
	control := map[string]string{"authorization": "Bearer " + sign(jwt.SigningMethodRS256, key, claims(), set.KID())}
	if resp := ts.check(t, "/openai/x", control, ""); resp.GetOkResponse() == nil {
		t.Fatalf("Check(untampered token signed with the stored key) = %d, want OK", deniedStatus(resp))
	}
	for name, tok := range tests {
		t.Run(name, func(t *testing.T) {
			h := map[string]string{"authorization": "Bearer " + tok}
			if got := deniedStatus(ts.check(t, "/api/v1/admin/x", h, "")); got != 401 {
				t.Errorf("Check(%s) = %d, want 401", name, got)
			}
		})
	}
}

// signingKey reads key kid from ts's store and unseals it as package
// keyring stores it (see Ring.generate), so that forgeries are signed with
// the real key while keyring hands its private key to nobody. It also pins
// the stored form: a change to it fails here.
func signingKey(t *testing.T, ts *testService, kid string) *rsa.PrivateKey {
	t.Helper()
	keys, err := ts.store.SigningKeys(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	i := slices.IndexFunc(keys, func(k store.SigningKey) bool { return k.KID == kid })
	if i < 0 {
		t.Fatalf("signing key %q not in the store", kid)
	}
	kek, err := hkdf.Key(sha256.New, []byte(ts.cfg.SigningSecret), nil, "leaky-tokens authz signing keys v1", 32)
	if err != nil {
		t.Fatal(err)
	}
	block, err := aes.NewCipher(kek)
	if err != nil {
		t.Fatal(err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		t.Fatal(err)
	}
	sealed, ns := keys[i].Sealed, aead.NonceSize()
	der, err := aead.Open(nil, sealed[:ns], sealed[ns:], []byte(kid))
	if err != nil {
		t.Fatalf("unseal signing key %s: %v", kid, err)
	}
	priv, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		t.Fatal(err)
	}
	rk, ok := priv.(*rsa.PrivateKey)
	if !ok {
		t.Fatalf("signing key %s is a %T, want RSA", kid, priv)
	}
	return rk
}

// The scheme is case-insensitive (RFC 7235) and extra spaces are tolerated:
// strictness about forgeries must not refuse a genuine token.
func TestCheckBearerSchemeCase(t *testing.T) {
	ts := startService(t, nil, nil)
	u := ts.register(t, "casual")
	if ts.check(t, "/openai/x", map[string]string{"authorization": "bearer  " + u.Token}, "").GetOkResponse() == nil {
		t.Error("Check(lowercase bearer, two spaces) refused a valid token")
	}
}

// TestNoSecretsInLogs drives every flow that handles a secret, including
// failures, and then searches the captured log output for each secret.
func TestNoSecretsInLogs(t *testing.T) {
	ts := startService(t, nil, nil)
	u := ts.register(t, "logged")
	ts.call(t, "POST", "/api/v1/auth/login", "", map[string]string{"username": "logged", "password": "wrong-password-xyz"}, nil)
	key := ts.newKey(t, u.Token, nil)
	ts.check(t, "/openai/x?api_key="+key.APIKey, map[string]string{"x-api-key": key.APIKey}, "")
	ts.check(t, "/openai/x", map[string]string{"x-api-key": key.APIKey[:len(key.APIKey)-1] + "Z"}, "")
	ts.check(t, "/openai/x", map[string]string{"authorization": "Bearer " + u.Token}, "")
	ts.check(t, "/openai/x", map[string]string{"authorization": "Bearer " + u.Token + "x"}, "")
	var cl clientJSON
	ts.call(t, "POST", "/api/v1/auth/clients", u.Token, map[string]any{}, &cl)
	_, tok := ts.form(t, "/oauth2/token", url.Values{"grant_type": {"client_credentials"}}, cl.ClientID, cl.ClientSecret)
	ts.form(t, "/oauth2/token", url.Values{"grant_type": {"client_credentials"}}, cl.ClientID, cl.ClientSecret+"x")
	_, ref := ts.form(t, "/oauth2/token", url.Values{"grant_type": {"refresh_token"}, "refresh_token": {u.RefreshToken}, "client_id": {oauth.FirstPartyClientID}}, "", "")
	ts.form(t, "/oauth2/token", url.Values{"grant_type": {"refresh_token"}, "refresh_token": {u.RefreshToken}, "client_id": {oauth.FirstPartyClientID}}, "", "")
	ts.form(t, "/oauth2/revoke", url.Values{"token": {u.RefreshToken}, "client_id": {oauth.FirstPartyClientID}}, "", "")
	ts.call(t, "DELETE", "/api/v1/auth/api-keys/"+key.ID, u.Token, nil, nil)

	secrets := map[string]string{
		"password":            "password-logged",
		"wrong password":      "wrong-password-xyz",
		"admin password":      "admin-password-123",
		"signing secret":      ts.cfg.SigningSecret,
		"api key":             key.APIKey,
		"api key secret part": key.APIKey[len("lt_")+15:],
		"jwt":                 u.Token,
		"jwt signature":       u.Token[strings.LastIndexByte(u.Token, '.')+1:],
		"refresh token":       u.RefreshToken,
		"client secret":       cl.ClientSecret,
	}
	if s, ok := tok["access_token"].(string); ok {
		secrets["client access token"] = s
	}
	if s, ok := ref["refresh_token"].(string); ok {
		secrets["rotated refresh token"] = s
	}
	logs := ts.logs.String()
	if !strings.Contains(logs, "http request") {
		t.Fatalf("captured no request logs; the test would prove nothing:\n%s", logs)
	}
	for name, secret := range secrets {
		if secret == "" {
			t.Errorf("secret %q is empty; the flow did not produce it", name)
			continue
		}
		if strings.Contains(logs, secret) {
			t.Errorf("the log contains the %s", name)
		}
	}
}
