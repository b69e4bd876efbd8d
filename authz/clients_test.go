package authz

import (
	"bytes"
	"context"
	"net/http"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/oauth2/clientcredentials"

	"github.com/leakytokens/leaky/internal/contract"
	"github.com/leakytokens/leaky/internal/policy"
)

// clientToken creates a client_credentials client for the bearer's user
// with the request in and returns an access token of it.
func (ts *testService) clientToken(t *testing.T, bearer string, in map[string]any) (clientJSON, string) {
	t.Helper()
	var c clientJSON
	if code := ts.call(t, "POST", "/api/v1/auth/clients", bearer, in, &c); code != http.StatusCreated {
		t.Fatalf("create client %v = %d, want 201", in, code)
	}
	cc := clientcredentials.Config{ClientID: c.ClientID, ClientSecret: c.ClientSecret, TokenURL: ts.base + "/oauth2/token"}
	tok, err := cc.Token(context.Background())
	if err != nil {
		t.Fatalf("client_credentials Token() = %v", err)
	}
	return c, tok.AccessToken
}

// One user, one budget: every client a user creates is charged to its
// owner's bucket, at the owner's tier, so creating clients never buys
// budget; an organisation's app is charged to its organisation's pool too.
func TestClientChargedToOwner(t *testing.T) {
	ts := startService(t, nil, nil)
	owner := ts.register(t, "payer")
	if code := ts.call(t, "POST", "/api/v1/auth/users/"+owner.UserID+"/roles", ts.adminToken(t), map[string]string{"role": "PRO"}, nil); code != http.StatusOK {
		t.Fatalf("grant PRO = %d", code)
	}
	ownerCheck := okHeaders(ts.check(t, "/openai/v1/chat/completions", map[string]string{"authorization": "Bearer " + owner.Token}, chatBody))
	for i, roles := range [][]string{nil, {"USER"}, {"PRO"}} {
		c, tok := ts.clientToken(t, owner.Token, map[string]any{"roles": roles})
		got := okHeaders(ts.check(t, "/openai/v1/chat/completions", map[string]string{"authorization": "Bearer " + tok}, chatBody))
		if got[contract.HeaderUserID] != owner.UserID || got[contract.HeaderTier] != "pro" {
			t.Errorf("Check(client %d %s, roles %v) = %v, want its owner %s at the owner's tier pro", i, c.ClientID, roles, got, owner.UserID)
		}
		if got[contract.HeaderEstimate] != ownerCheck[contract.HeaderEstimate] {
			t.Errorf("Check(client %d) estimate = %s, want the owner's %s", i, got[contract.HeaderEstimate], ownerCheck[contract.HeaderEstimate])
		}
	}

	// An organisation's app: its owner's bucket and its organisation's pool,
	// whether or not it names the organisation; no other organisation.
	ts.call(t, "POST", "/api/v1/auth/orgs", owner.Token, map[string]string{"id": "payco", "name": "Pay Co"}, nil)
	ts.call(t, "POST", "/api/v1/auth/orgs", owner.Token, map[string]string{"id": "otherco", "name": "Other Co"}, nil)
	_, app := ts.clientToken(t, owner.Token, map[string]any{"orgId": "payco"})
	for _, h := range []map[string]string{{}, {contract.HeaderOrg: "payco"}} {
		h["authorization"] = "Bearer " + app
		got := okHeaders(ts.check(t, "/openai/x", h, ""))
		if got[contract.HeaderUserID] != owner.UserID || got[contract.HeaderOrgID] != "payco" {
			t.Errorf("Check(org app, x-leaky-org %q) = %v, want user %s, org payco", h[contract.HeaderOrg], got, owner.UserID)
		}
	}
	resp := ts.check(t, "/openai/x", map[string]string{"authorization": "Bearer " + app, contract.HeaderOrg: "otherco"}, "")
	if deniedStatus(resp) != http.StatusForbidden {
		t.Errorf("Check(org app naming another organisation) = %v, want 403", resp)
	}
	// A service account names no organisation of its own.
	_, svc := ts.clientToken(t, owner.Token, nil)
	if got := okHeaders(ts.check(t, "/openai/x", map[string]string{"authorization": "Bearer " + svc}, "")); got[contract.HeaderOrgID] != "" {
		t.Errorf("Check(service account) = %v, want no organisation", got)
	}
}

// The policy's max_clients_per_user bounds the clients one user may own:
// the next is refused 409 with the JSON error, for that user only.
func TestClientsPerUserBound(t *testing.T) {
	pol := bytes.Replace(policy.Example(), []byte("max_clients_per_user: 10"), []byte("max_clients_per_user: 2"), 1)
	path := filepath.Join(t.TempDir(), "policy.yaml")
	if err := os.WriteFile(path, pol, 0o600); err != nil {
		t.Fatal(err)
	}
	ts := startService(t, nil, func(c *Config) { c.PolicyPath = path })
	if got := ts.policy.Load().MaxClientsPerUser; got != 2 {
		t.Fatalf("policy max_clients_per_user = %d, want 2", got)
	}
	hog := ts.register(t, "hog")
	for range 2 {
		ts.clientToken(t, hog.Token, nil)
	}
	var e struct{ Error, Message string }
	if code := ts.call(t, "POST", "/api/v1/auth/clients", hog.Token, map[string]any{}, &e); code != http.StatusConflict || e.Error != "client_limit" {
		t.Errorf("third client = %d %+v, want 409 client_limit", code, e)
	}
	ts.clientToken(t, ts.register(t, "other").Token, nil)
}
