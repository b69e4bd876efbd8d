package ratelimit

import (
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/leakytokens/leaky/internal/contract"
	providersstub "github.com/leakytokens/leaky/providers-stub"
)

// Every malformed or unauthorised consume has its status and JSON
// envelope, and charges nothing.
func TestTokensConsumeMalformed(t *testing.T) {
	e := startTokens(t, providersstub.Knobs{}, func(c *Config) { c.Tokens.TrustedProxies = "10.0.0.0/8" })
	user, other := uuid.NewString(), uuid.NewString()
	tok := e.token(t, user, []string{"USER"}, "acme")
	ok := func(extra string) string {
		return `{"userId":"` + user + `","provider":"openai"` + extra + `}`
	}
	cases := []struct {
		name, tok, body string
		hdr             []string
		status          int
	}{
		{"no token", "", ok(""), nil, 401},
		{"garbage token", "not.a.jwt", ok(""), nil, 401},
		{"headers from an untrusted peer", "", ok(""), []string{contract.HeaderUserID, user}, 401},
		{"bad JSON", tok, `{"userId":`, nil, 400},
		{"not an object", tok, `[1,2]`, nil, 400},
		{"trailing data", tok, ok("") + `{}`, nil, 400},
		{"tokens wrong type", tok, ok(`,"tokens":"ten"`), nil, 400},
		{"tokens fraction", tok, ok(`,"tokens":1.5`), nil, 400},
		{"userId wrong type", tok, `{"userId":5,"provider":"openai"}`, nil, 400},
		{"prompt wrong type", tok, ok(`,"prompt":{"a":1}`), nil, 400},
		{"messages not an array", tok, ok(`,"messages":"hi"`), nil, 400},
		{"missing userId", tok, `{"provider":"openai","tokens":5}`, nil, 400},
		{"missing provider", tok, `{"userId":"` + user + `","tokens":5}`, nil, 400},
		{"unknown provider", tok, `{"userId":"` + user + `","provider":"mistral","tokens":5}`, nil, 400},
		{"bad userId", tok, `{"userId":"bob","provider":"openai","tokens":5}`, nil, 400},
		{"bad orgId", tok, ok(`,"orgId":"Acme Corp"`), nil, 400},
		{"tokens zero", tok, ok(`,"tokens":0`), nil, 400},
		{"tokens negative", tok, ok(`,"tokens":-3`), nil, 400},
		{"tokens above 10000", tok, ok(`,"tokens":10001`), nil, 400},
		{"oversize body", tok, ok(`,"prompt":"` + strings.Repeat("a", 1<<20) + `"`), nil, 413},
		{"idempotency key too long", tok, ok(`,"tokens":5`), []string{"Idempotency-Key", strings.Repeat("k", 101)}, 400},
		{"another user's id", tok, `{"userId":"` + other + `","provider":"openai","tokens":5}`, nil, 403},
		{"an organisation not theirs", tok, ok(`,"orgId":"globex","tokens":5`), nil, 403},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			a := e.do(t, "POST", "/api/v1/tokens/consume", c.tok, c.body, c.hdr...)
			m := a.json(t)
			if a.status != c.status || m["status"] != float64(c.status) || m["error"] == "" || m["message"] == "" {
				t.Fatalf("got %d %s, want %d in the JSON envelope", a.status, a.body, c.status)
			}
		})
	}
	if got := e.userRemaining(t, user); got != 4000 {
		t.Fatalf("user's bucket at %d after refused requests, want 4000 (untouched)", got)
	}
	if us := e.usages(t); len(us) != 0 {
		t.Fatalf("ledger recorded %+v", us)
	}
}

func TestTokensCallerIdentity(t *testing.T) {
	e := startTokens(t, providersstub.Knobs{}, func(c *Config) { c.Tokens.TrustedProxies = "127.0.0.0/8" })
	user, other := uuid.NewString(), uuid.NewString()
	body := func(u, extra string) string {
		return `{"userId":"` + u + `","provider":"openai","tokens":5` + extra + `}`
	}
	admin := e.token(t, uuid.NewString(), []string{"ADMIN"})
	member := e.token(t, user, []string{"USER"}, "acme")
	for _, c := range []struct {
		name, tok, body string
		hdr             []string
		status          int
	}{
		{"own id", member, body(user, ""), nil, 200},
		{"own organisation", member, body(user, `,"orgId":"acme"`), nil, 200},
		{"ADMIN for another", admin, body(other, `,"orgId":"globex"`), nil, 200},
		{"gateway headers from a trusted peer", "", body(user, `,"orgId":"acme"`),
			[]string{contract.HeaderUserID, user, contract.HeaderOrgID, "acme", contract.HeaderTier, "free", contract.HeaderRoles, "USER"}, 200},
		{"gateway headers, another user", "", body(other, ""), []string{contract.HeaderUserID, user, contract.HeaderRoles, "USER"}, 403},
		{"gateway headers, organisation not charged", "", body(user, `,"orgId":"globex"`),
			[]string{contract.HeaderUserID, user, contract.HeaderOrgID, "acme"}, 403},
	} {
		t.Run(c.name, func(t *testing.T) {
			if a := e.do(t, "POST", "/api/v1/tokens/consume", c.tok, c.body, c.hdr...); a.status != c.status {
				t.Fatalf("got %d %s, want %d", a.status, a.body, c.status)
			}
		})
	}
}
