package ratelimit

import (
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/google/uuid"

	providersstub "github.com/leakytokens/leaky/providers-stub"
)

// signed signs an access token with claims (iss, aud, iat, exp added).
func (e *tokensEnv) signed(t *testing.T, claims jwt.MapClaims) string {
	t.Helper()
	claims["iss"], claims["aud"] = "leaky-tokens-auth", "leaky-tokens"
	claims["iat"], claims["exp"] = time.Now().Unix(), time.Now().Add(time.Hour).Unix()
	tok := jwt.NewWithClaims(jwt.SigningMethodRS256, claims)
	tok.Header["kid"] = testKID
	s, err := tok.SignedString(e.key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// A consume is charged at the tier of the user it charges: a client's
// token at its owner's tier (owner_roles), not its own roles'; an ADMIN
// consuming for another user at the policy's default tier, not the
// ADMIN's.
func TestTokensConsumeTier(t *testing.T) {
	e := startTokens(t, providersstub.Knobs{}, nil)
	owner, admin := uuid.NewString(), uuid.NewString()
	cases := []struct {
		name     string
		tok      string
		user     string
		capacity float64 // of the bucket charged: free openai 4000, pro 20000, admin 40000
	}{
		{"user", e.token(t, owner, []string{"USER"}), owner, 4000},
		{"client of a pro owner", e.signed(t, jwt.MapClaims{"sub": "client-" + uuid.NewString(), "roles": []string{"USER"},
			"owner": owner, "owner_roles": []string{"USER", "PRO"}}), owner, 20000},
		{"admin for itself", e.token(t, admin, []string{"ADMIN"}), admin, 40000},
		{"admin for another user", e.token(t, admin, []string{"ADMIN"}), uuid.NewString(), 4000},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			a := e.do(t, "POST", "/api/v1/tokens/consume", c.tok, `{"userId":"`+c.user+`","provider":"openai","tokens":10,"prompt":"hi"}`)
			if a.status != 200 || a.json(t)["capacity"] != c.capacity {
				t.Fatalf("consume: %d %s, want 200 with capacity %v", a.status, a.body, c.capacity)
			}
		})
	}
}
