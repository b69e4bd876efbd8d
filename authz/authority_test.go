package authz

import (
	"context"
	"fmt"
	"net/url"
	"strings"
	"testing"

	"golang.org/x/oauth2/clientcredentials"

	"github.com/leakytokens/leaky/internal/contract"
)

// A token issued while its user was ADMIN carries ADMIN until it expires;
// role, key and organisation management must decide on the user's current
// roles, read from the store.
func TestStaleAdminTokenLosesAuthority(t *testing.T) {
	ts := startService(t, nil, nil)
	admin := ts.adminToken(t)
	mallory := ts.register(t, "mallory")
	bob := ts.register(t, "bob")
	if code := ts.call(t, "POST", "/api/v1/auth/users/"+mallory.UserID+"/roles", admin, map[string]string{"role": "ADMIN"}, nil); code != 200 {
		t.Fatalf("grant ADMIN = %d", code)
	}
	var stale authResponse
	ts.call(t, "POST", "/api/v1/auth/login", "", map[string]string{"username": "mallory", "password": "password-mallory"}, &stale)
	ts.call(t, "POST", "/api/v1/auth/orgs", bob.Token, map[string]string{"id": "bobco"}, nil)
	if code := ts.call(t, "DELETE", "/api/v1/auth/users/"+mallory.UserID+"/roles/ADMIN", admin, nil, nil); code != 200 {
		t.Fatalf("revoke ADMIN = %d", code)
	}
	tests := []struct {
		name, method, path string
		in                 any
		want               int
	}{
		{"grant a role", "POST", "/api/v1/auth/users/" + mallory.UserID + "/roles", map[string]string{"role": "ADMIN"}, 403},
		{"revoke a role", "DELETE", "/api/v1/auth/users/" + bob.UserID + "/roles/USER", nil, 403},
		{"list another's keys", "GET", "/api/v1/auth/api-keys?userId=" + bob.UserID, nil, 403},
		{"create another's key", "POST", "/api/v1/auth/api-keys", map[string]string{"userId": bob.UserID}, 403},
		{"list another org's members", "GET", "/api/v1/auth/orgs/bobco/members", nil, 404},
		{"join another org", "POST", "/api/v1/auth/orgs/bobco/members", map[string]any{"userId": mallory.UserID, "admin": true}, 404},
		{"client with ADMIN", "POST", "/api/v1/auth/clients", map[string]any{"roles": []string{"ADMIN"}}, 403},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := ts.call(t, tt.method, tt.path, stale.Token, tt.in, nil); got != tt.want {
				t.Errorf("%s %s with a stale ADMIN token = %d, want %d", tt.method, tt.path, got, tt.want)
			}
		})
	}
}

// A client_credentials token carries only the roles its owner still holds,
// and an organisation's app stops working once its owner is no longer an
// admin of the organisation.
func TestClientCredentialsFollowOwner(t *testing.T) {
	ts := startService(t, nil, nil)
	admin := ts.adminToken(t)
	owner := ts.register(t, "owner")
	ts.call(t, "POST", "/api/v1/auth/users/"+owner.UserID+"/roles", admin, map[string]string{"role": "PRO"}, nil)
	var fresh authResponse
	ts.call(t, "POST", "/api/v1/auth/login", "", map[string]string{"username": "owner", "password": "password-owner"}, &fresh)
	var svc clientJSON
	if code := ts.call(t, "POST", "/api/v1/auth/clients", fresh.Token, map[string]any{"roles": []string{"PRO", "USER"}}, &svc); code != 201 {
		t.Fatalf("create client = %d", code)
	}
	ts.call(t, "POST", "/api/v1/auth/orgs", fresh.Token, map[string]string{"id": "acme"}, nil)
	var app clientJSON
	if code := ts.call(t, "POST", "/api/v1/auth/clients", fresh.Token, map[string]any{"orgId": "acme"}, &app); code != 201 {
		t.Fatalf("create org app = %d", code)
	}
	ts.call(t, "DELETE", "/api/v1/auth/users/"+owner.UserID+"/roles/PRO", admin, nil, nil)

	cc := clientcredentials.Config{ClientID: svc.ClientID, ClientSecret: svc.ClientSecret, TokenURL: ts.base + "/oauth2/token"}
	tok, err := cc.Token(context.Background())
	if err != nil {
		t.Fatalf("Token() = %v", err)
	}
	if got := okHeaders(ts.check(t, "/openai/x", map[string]string{"authorization": "Bearer " + tok.AccessToken}, ""))[contract.HeaderRoles]; got != "USER" {
		t.Errorf("roles of a client whose owner lost PRO = %q, want USER", got)
	}

	// The owner steps down as the organisation's admin (another admin
	// remains): the app gets no more tokens.
	other := ts.register(t, "other")
	ts.call(t, "POST", "/api/v1/auth/orgs/acme/members", fresh.Token, map[string]any{"userId": other.UserID, "admin": true}, nil)
	if code := ts.call(t, "POST", "/api/v1/auth/orgs/acme/members", other.Token, map[string]any{"userId": owner.UserID, "admin": false}, nil); code != 201 {
		t.Fatalf("demote owner = %d", code)
	}
	code, body := ts.form(t, "/oauth2/token", url.Values{"grant_type": {"client_credentials"}}, app.ClientID, app.ClientSecret)
	if code == 200 {
		t.Errorf("org app token after its owner stopped being an org admin = %d (error %v), want refused", code, body["error"])
	}
}

// Client roles follow the role pattern and their number is capped, even
// for an ADMIN, who may give a client any role.
func TestCreateClientValidatesRoles(t *testing.T) {
	ts := startService(t, nil, nil)
	admin := ts.adminToken(t)
	many := make([]string, maxClientRoles+1)
	for i := range many {
		many[i] = fmt.Sprintf("ROLE_%d", i)
	}
	tests := []struct {
		name  string
		roles []string
		want  int
	}{
		{"valid", []string{"PRO", "user"}, 201},
		{"space and punctuation", []string{"bad role!"}, 400},
		{"comma", []string{"PRO,ADMIN"}, 400},
		{"empty name", []string{""}, 400},
		{"too long", []string{strings.Repeat("A", 40)}, 400},
		{"too many", many, 400},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := ts.call(t, "POST", "/api/v1/auth/clients", admin, map[string]any{"roles": tt.roles}, nil); got != tt.want {
				t.Errorf("create client with roles %q = %d, want %d", tt.roles, got, tt.want)
			}
		})
	}
}
