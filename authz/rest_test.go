package authz

import (
	"bytes"
	"net/http"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/leakytokens/leaky/internal/contract"
)

func TestRegisterLogin(t *testing.T) {
	ts := startService(t, nil, nil)
	alice := ts.register(t, "alice")
	if alice.Token == "" || alice.UserID == "" || !cmp.Equal(alice.Roles, []string{"USER"}) {
		t.Errorf("register = %+v, want a token, id and roles [USER]", alice)
	}
	tests := []struct {
		name   string
		path   string
		in     any
		status int
	}{
		{"duplicate username", "/api/v1/auth/register", map[string]string{"username": "Alice", "email": "x@example.com", "password": "longenough"}, 409},
		{"duplicate email", "/api/v1/auth/register", map[string]string{"username": "alice2", "email": "ALICE@example.com", "password": "longenough"}, 409},
		{"short password", "/api/v1/auth/register", map[string]string{"username": "zed", "email": "z@example.com", "password": "short"}, 400},
		{"bad email", "/api/v1/auth/register", map[string]string{"username": "zed", "email": "nope", "password": "longenough"}, 400},
		{"bad username", "/api/v1/auth/register", map[string]string{"username": "a b", "email": "z@example.com", "password": "longenough"}, 400},
		{"unknown field", "/api/v1/auth/register", map[string]any{"username": "zed", "email": "z@example.com", "password": "longenough", "roles": []string{"ADMIN"}}, 400},
		{"login ok", "/api/v1/auth/login", map[string]string{"username": "alice", "password": "password-alice"}, 200},
		{"login wrong password", "/api/v1/auth/login", map[string]string{"username": "alice", "password": "nope-nope"}, 401},
		{"login unknown user", "/api/v1/auth/login", map[string]string{"username": "nobody", "password": "nope-nope"}, 401},
		{"login empty", "/api/v1/auth/login", map[string]string{}, 401},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := ts.call(t, "POST", tt.path, "", tt.in, nil); got != tt.status {
				t.Errorf("POST %s (%s) = %d, want %d", tt.path, tt.name, got, tt.status)
			}
		})
	}
	// Malformed and oversized bodies get a 4xx JSON error, never a 5xx.
	for name, body := range map[string][]byte{"malformed": []byte("{"), "huge": bytes.Repeat([]byte("a"), 100<<10)} {
		resp, err := http.Post(ts.base+"/api/v1/auth/login", "application/json", bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode < 400 || resp.StatusCode >= 500 {
			t.Errorf("login with %s body = %d, want 4xx", name, resp.StatusCode)
		}
	}
}

func TestAPIKeysOwnership(t *testing.T) {
	ts := startService(t, nil, nil)
	a, b := ts.register(t, "usera"), ts.register(t, "userb")
	admin := ts.adminToken(t)
	ka := ts.newKey(t, a.Token, map[string]any{"name": "a-key"})
	if !strings.HasPrefix(ka.APIKey, "lt_") || ka.UserID != a.UserID || ka.Name != "a-key" {
		t.Fatalf("create = %+v", ka)
	}
	var list []keyJSON
	ts.call(t, "GET", "/api/v1/auth/api-keys", a.Token, nil, &list)
	if len(list) != 1 || list[0].ID != ka.ID || list[0].APIKey != "" {
		t.Errorf("list(a) = %+v, want one key without its secret", list)
	}
	tests := []struct {
		name, method, path, bearer string
		in                         any
		status                     int
	}{
		{"no token", "GET", "/api/v1/auth/api-keys", "", nil, 401},
		{"api key cannot manage keys", "GET", "/api/v1/auth/api-keys", ka.APIKey, nil, 401},
		{"b lists a's keys", "GET", "/api/v1/auth/api-keys?userId=" + a.UserID, b.Token, nil, 403},
		{"b creates a key for a", "POST", "/api/v1/auth/api-keys", b.Token, map[string]string{"userId": a.UserID}, 403},
		{"b revokes a's key", "DELETE", "/api/v1/auth/api-keys/" + ka.ID, b.Token, nil, 404},
		{"b revokes a's key seed style", "DELETE", "/api/v1/auth/api-keys?userId=" + b.UserID + "&apiKeyId=" + ka.ID, b.Token, nil, 404},
		{"b revokes as a seed style", "DELETE", "/api/v1/auth/api-keys?userId=" + a.UserID + "&apiKeyId=" + ka.ID, b.Token, nil, 403},
		{"bad key id", "DELETE", "/api/v1/auth/api-keys/x", a.Token, nil, 400},
		{"admin lists a's keys", "GET", "/api/v1/auth/api-keys?userId=" + a.UserID, admin, nil, 200},
		{"admin creates a key for b", "POST", "/api/v1/auth/api-keys", admin, map[string]string{"userId": b.UserID}, 201},
		{"b cannot grant roles", "POST", "/api/v1/auth/users/" + b.UserID + "/roles", b.Token, map[string]string{"role": "ADMIN"}, 403},
		{"admin grants PRO to b", "POST", "/api/v1/auth/users/" + b.UserID + "/roles", admin, map[string]string{"role": "pro"}, 200},
		{"admin grants bad role", "POST", "/api/v1/auth/users/" + b.UserID + "/roles", admin, map[string]string{"role": "no spaces"}, 400},
		{"admin grants to nobody", "POST", "/api/v1/auth/users/nobody/roles", admin, map[string]string{"role": "PRO"}, 404},
		{"b cannot revoke roles", "DELETE", "/api/v1/auth/users/" + a.UserID + "/roles/USER", b.Token, nil, 403},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := ts.call(t, tt.method, tt.path, tt.bearer, tt.in, nil); got != tt.status {
				t.Errorf("%s %s = %d, want %d", tt.method, tt.path, got, tt.status)
			}
		})
	}
	// b cannot validate (probe) a's key; a can.
	validate := func(bearer string) int {
		req, _ := http.NewRequest("GET", ts.base+"/api/v1/auth/api-keys/validate", nil)
		req.Header.Set("Authorization", "Bearer "+bearer)
		req.Header.Set("X-Api-Key", ka.APIKey)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if got := validate(b.Token); got != 401 {
		t.Errorf("validate a's key as b = %d, want 401", got)
	}
	if got := validate(a.Token); got != 200 {
		t.Errorf("validate own key = %d, want 200", got)
	}
	// b's new role shows in a fresh login and in Check's tier.
	var fresh authResponse
	ts.call(t, "POST", "/api/v1/auth/login", "", map[string]string{"username": "userb", "password": "password-userb"}, &fresh)
	if !cmp.Equal(fresh.Roles, []string{"PRO", "USER"}) {
		t.Errorf("roles after grant = %v, want [PRO USER]", fresh.Roles)
	}
	if got := okHeaders(ts.check(t, "/openai/x", map[string]string{"authorization": "Bearer " + fresh.Token}, ""))[contract.HeaderTier]; got != "pro" {
		t.Errorf("tier after grant = %q, want pro", got)
	}
	// a revokes its own key; b's key from the admin is untouched.
	if got := ts.call(t, "DELETE", "/api/v1/auth/api-keys/"+ka.ID, a.Token, nil, nil); got != 204 {
		t.Errorf("revoke own key = %d, want 204", got)
	}
	if got := ts.call(t, "DELETE", "/api/v1/auth/api-keys/"+ka.ID, a.Token, nil, nil); got != 404 {
		t.Errorf("revoke again = %d, want 404", got)
	}
}

func TestOrgs(t *testing.T) {
	ts := startService(t, nil, nil)
	owner, member, stranger := ts.register(t, "owner"), ts.register(t, "member"), ts.register(t, "stranger")
	admin := ts.adminToken(t)
	if got := ts.call(t, "POST", "/api/v1/auth/orgs", owner.Token, map[string]string{"id": "acme"}, nil); got != 201 {
		t.Fatalf("create org = %d", got)
	}
	members := "/api/v1/auth/orgs/acme/members"
	tests := []struct {
		name, method, path, bearer string
		in                         any
		status                     int
	}{
		{"duplicate org", "POST", "/api/v1/auth/orgs", stranger.Token, map[string]string{"id": "acme"}, 409},
		{"bad org id", "POST", "/api/v1/auth/orgs", stranger.Token, map[string]string{"id": "Not Valid"}, 400},
		{"owner adds member", "POST", members, owner.Token, map[string]any{"userId": member.UserID}, 201},
		{"add unknown user", "POST", members, owner.Token, map[string]any{"userId": "nobody"}, 404},
		{"member lists", "GET", members, member.Token, nil, 403},
		{"member adds stranger", "POST", members, member.Token, map[string]any{"userId": stranger.UserID}, 403},
		{"stranger lists", "GET", members, stranger.Token, nil, 404},
		{"stranger adds self", "POST", members, stranger.Token, map[string]any{"userId": stranger.UserID}, 404},
		{"stranger removes member", "DELETE", members + "/" + member.UserID, stranger.Token, nil, 404},
		{"unknown org", "GET", "/api/v1/auth/orgs/nope/members", owner.Token, nil, 404},
		{"owner lists", "GET", members, owner.Token, nil, 200},
		{"admin lists", "GET", members, admin, nil, 200},
		{"admin removes member", "DELETE", members + "/" + member.UserID, admin, nil, 204},
		{"remove again", "DELETE", members + "/" + member.UserID, owner.Token, nil, 404},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := ts.call(t, tt.method, tt.path, tt.bearer, tt.in, nil); got != tt.status {
				t.Errorf("%s %s = %d, want %d", tt.method, tt.path, got, tt.status)
			}
		})
	}
	var mine []map[string]any
	ts.call(t, "GET", "/api/v1/auth/orgs", owner.Token, nil, &mine)
	if len(mine) != 1 || mine[0]["id"] != "acme" {
		t.Errorf("owner's orgs = %v, want [acme]", mine)
	}
	ts.call(t, "GET", "/api/v1/auth/orgs", stranger.Token, nil, &mine)
	if len(mine) != 0 {
		t.Errorf("stranger's orgs = %v, want none", mine)
	}
}
