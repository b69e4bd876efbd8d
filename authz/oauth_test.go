package authz

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/leakytokens/leaky/authz/oauth"
	"github.com/leakytokens/leaky/authz/store"
	"github.com/leakytokens/leaky/internal/contract"
)

// form posts an OAuth2 form, with basic auth when clientID and secret are
// both set, and returns the status and decoded JSON.
func (ts *testService) form(t *testing.T, path string, vals url.Values, clientID, secret string) (int, map[string]any) {
	t.Helper()
	req, _ := http.NewRequest("POST", ts.base+path, strings.NewReader(vals.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if clientID != "" && secret != "" {
		req.SetBasicAuth(url.QueryEscape(clientID), url.QueryEscape(secret))
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	out := map[string]any{}
	_ = json.Unmarshal(data, &out)
	return resp.StatusCode, out
}

type clientJSON struct {
	ClientID     string `json:"clientId"`
	ClientSecret string `json:"clientSecret"`
}

func TestClientCredentials(t *testing.T) {
	ts := startService(t, nil, nil)
	owner := ts.register(t, "owner")
	var svc clientJSON
	if code := ts.call(t, "POST", "/api/v1/auth/clients", owner.Token, map[string]any{}, &svc); code != 201 {
		t.Fatalf("create client = %d", code)
	}
	cc := clientcredentials.Config{ClientID: svc.ClientID, ClientSecret: svc.ClientSecret, TokenURL: ts.base + "/oauth2/token"}
	tok, err := cc.Token(context.Background())
	if err != nil {
		t.Fatalf("client_credentials Token() = %v", err)
	}
	if tok.RefreshToken != "" {
		t.Error("client_credentials returned a refresh token")
	}
	got := okHeaders(ts.check(t, "/openai/x", map[string]string{"authorization": "Bearer " + tok.AccessToken}, ""))
	if got[contract.HeaderUserID] != owner.UserID || got[contract.HeaderTier] != "free" {
		t.Errorf("Check(service account token) = %v, want its owner %s, tier free", got, owner.UserID)
	}
	bad := cc
	bad.ClientSecret = "wrong"
	if _, err := bad.Token(context.Background()); err == nil {
		t.Error("Token() with a wrong secret = nil error")
	}
	for name, in := range map[string]map[string]any{
		"role the owner lacks": {"roles": []string{"ADMIN"}},
		"org the owner lacks":  {"orgId": "acme"},
	} {
		if code := ts.call(t, "POST", "/api/v1/auth/clients", owner.Token, in, nil); code != 403 && code != 404 {
			t.Errorf("create client with %s = %d, want 403 or 404", name, code)
		}
	}

	// An organisation's app carries the organisation.
	ts.call(t, "POST", "/api/v1/auth/orgs", owner.Token, map[string]string{"id": "acme"}, nil)
	var app clientJSON
	if code := ts.call(t, "POST", "/api/v1/auth/clients", owner.Token, map[string]any{"orgId": "acme"}, &app); code != 201 {
		t.Fatalf("create org app = %d", code)
	}
	cc = clientcredentials.Config{ClientID: app.ClientID, ClientSecret: app.ClientSecret, TokenURL: ts.base + "/oauth2/token",
		AuthStyle: oauth2.AuthStyleInParams}
	tok, err = cc.Token(context.Background())
	if err != nil {
		t.Fatalf("org app Token() = %v", err)
	}
	got = okHeaders(ts.check(t, "/openai/x", map[string]string{"authorization": "Bearer " + tok.AccessToken, contract.HeaderOrg: "acme"}, ""))
	if got[contract.HeaderOrgID] != "acme" {
		t.Errorf("Check(org app, acme) = %v, want org acme", got)
	}

	// Introspection: active for a live token of the caller's own,
	// inactive for garbage.
	code, body := ts.form(t, "/oauth2/introspect", url.Values{"token": {tok.AccessToken}}, app.ClientID, app.ClientSecret)
	if code != 200 || body["active"] != true || body["sub"] != app.ClientID {
		t.Errorf("introspect(live) = %d %v, want active, sub %s", code, body, app.ClientID)
	}
	code, body = ts.form(t, "/oauth2/introspect", url.Values{"token": {"nope"}}, svc.ClientID, svc.ClientSecret)
	if code != 200 || body["active"] != false {
		t.Errorf("introspect(garbage) = %d %v, want inactive", code, body)
	}
	if code, _ := ts.form(t, "/oauth2/introspect", url.Values{"token": {tok.AccessToken}}, "", ""); code != 401 {
		t.Errorf("introspect without client auth = %d, want 401", code)
	}
	// Unsupported grants are refused.
	code, body = ts.form(t, "/oauth2/token", url.Values{"grant_type": {"password"}, "username": {"owner"}, "password": {"password-owner"}}, svc.ClientID, svc.ClientSecret)
	if code < 400 || code >= 500 || body["error"] == nil {
		t.Errorf("password grant = %d %v, want a 4xx OAuth2 error", code, body)
	}
}

func TestRefreshRotationAndReuse(t *testing.T) {
	ts := startService(t, nil, nil)
	u := ts.register(t, "rotor")
	if u.RefreshToken == "" {
		t.Fatal("register returned no refresh token")
	}
	refresh := func(rt string) (int, map[string]any) {
		return ts.form(t, "/oauth2/token", url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt}, "client_id": {oauth.FirstPartyClientID}}, "", "")
	}
	code, first := refresh(u.RefreshToken)
	if code != 200 || first["access_token"] == nil || first["refresh_token"] == nil {
		t.Fatalf("refresh = %d %v, want new tokens", code, first)
	}
	rt2 := first["refresh_token"].(string)
	at2 := first["access_token"].(string)
	if rt2 == u.RefreshToken {
		t.Fatal("refresh token not rotated")
	}
	if okHeaders(ts.check(t, "/openai/x", map[string]string{"authorization": "Bearer " + at2}, ""))[contract.HeaderUserID] != u.UserID {
		t.Error("refreshed access token refused by Check")
	}
	// Reusing the rotated-out token fails and revokes the whole family.
	if code, body := refresh(u.RefreshToken); code != 400 || body["error"] != "invalid_grant" {
		t.Errorf("reuse = %d %v, want 400 invalid_grant", code, body)
	}
	if code, body := refresh(rt2); code == 200 {
		t.Errorf("newest refresh token after reuse = %d %v, want refused", code, body)
	}
	admin := ts.adminToken(t)
	var cl clientJSON
	ts.call(t, "POST", "/api/v1/auth/clients", admin, map[string]any{}, &cl)
	if _, body := ts.form(t, "/oauth2/introspect", url.Values{"token": {at2}}, cl.ClientID, cl.ClientSecret); body["active"] != false {
		t.Errorf("access token of a revoked family introspects %v, want inactive", body)
	}
	// Revocation of a fresh family's refresh token by its client.
	var fresh authResponse
	ts.call(t, "POST", "/api/v1/auth/login", "", map[string]string{"username": "rotor", "password": "password-rotor"}, &fresh)
	if code, _ := ts.form(t, "/oauth2/revoke", url.Values{"token": {fresh.RefreshToken}, "client_id": {oauth.FirstPartyClientID}}, "", ""); code != 200 {
		t.Errorf("revoke = %d, want 200", code)
	}
	if code, _ := refresh(fresh.RefreshToken); code == 200 {
		t.Error("revoked refresh token still refreshes")
	}
	if _, body := ts.form(t, "/oauth2/introspect", url.Values{"token": {fresh.Token}}, cl.ClientID, cl.ClientSecret); body["active"] != false {
		t.Errorf("access token after revoking its refresh token introspects %v, want inactive", body)
	}
}

func TestDiscoveryAndJWKS(t *testing.T) {
	ts := startService(t, nil, nil)
	for _, path := range []string{"/oauth2/jwks", "/.well-known/jwks.json"} {
		resp, err := http.Get(ts.base + path)
		if err != nil {
			t.Fatal(err)
		}
		var doc struct {
			Keys []map[string]any `json:"keys"`
		}
		_ = json.NewDecoder(resp.Body).Decode(&doc)
		resp.Body.Close()
		if resp.StatusCode != 200 || len(doc.Keys) == 0 || doc.Keys[0]["kid"] != ts.ring.Set().KID() || doc.Keys[0]["d"] != nil {
			t.Errorf("GET %s = %d %v, want the public signing key", path, resp.StatusCode, doc)
		}
	}
	var meta map[string]any
	resp, err := http.Get(ts.base + "/.well-known/oauth-authorization-server")
	if err != nil {
		t.Fatal(err)
	}
	_ = json.NewDecoder(resp.Body).Decode(&meta)
	resp.Body.Close()
	if meta["token_endpoint"] != ts.base+"/oauth2/token" || meta["issuer"] != "leaky-tokens-auth" {
		t.Errorf("metadata = %v", meta)
	}
	hc, err := grpc.NewClient(ts.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer hc.Close()
	for _, svc := range []string{"", "envoy.service.auth.v3.Authorization"} {
		resp, err := healthpb.NewHealthClient(hc).Check(context.Background(), &healthpb.HealthCheckRequest{Service: svc})
		if err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			t.Errorf("grpc health %q = %v, %v, want SERVING", svc, resp, err)
		}
	}
	for _, path := range []string{"/livez", "/readyz", "/metrics"} {
		resp, err := http.Get(ts.base + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Errorf("GET %s = %d, want 200", path, resp.StatusCode)
		}
	}
}

// deadlineStore records store calls made without a deadline.
type deadlineStore struct {
	store.Store
	mu      sync.Mutex
	without []string
}

func (d *deadlineStore) note(ctx context.Context, call string) {
	if _, ok := ctx.Deadline(); !ok {
		d.mu.Lock()
		d.without = append(d.without, call)
		d.mu.Unlock()
	}
}

func (d *deadlineStore) Client(ctx context.Context, id string) (store.Client, error) {
	d.note(ctx, "Client")
	return d.Store.Client(ctx, id)
}

func (d *deadlineStore) Token(ctx context.Context, kind store.TokenKind, sig string) (store.TokenSession, error) {
	d.note(ctx, "Token")
	return d.Store.Token(ctx, kind, sig)
}

func (d *deadlineStore) CreateToken(ctx context.Context, t store.TokenSession) error {
	d.note(ctx, "CreateToken")
	return d.Store.CreateToken(ctx, t)
}

func (d *deadlineStore) DeactivateTokens(ctx context.Context, kind store.TokenKind, requestID string) error {
	d.note(ctx, "DeactivateTokens")
	return d.Store.DeactivateTokens(ctx, kind, requestID)
}

// The OAuth2 endpoints give their store calls the REST deadline, so a
// stalled database answers instead of holding connections.
func TestOAuthEndpointsHaveDeadlines(t *testing.T) {
	ds := &deadlineStore{Store: store.NewMemory()}
	ts := startService(t, ds, nil)
	u := ts.register(t, "timely")
	var cl clientJSON
	ts.call(t, "POST", "/api/v1/auth/clients", u.Token, map[string]any{}, &cl)
	ds.mu.Lock()
	ds.without = nil
	ds.mu.Unlock()

	code, tok := ts.form(t, "/oauth2/token", url.Values{"grant_type": {"client_credentials"}}, cl.ClientID, cl.ClientSecret)
	if code != 200 {
		t.Fatalf("client_credentials = %d", code)
	}
	ts.form(t, "/oauth2/token", url.Values{"grant_type": {"refresh_token"}, "refresh_token": {u.RefreshToken}, "client_id": {oauth.FirstPartyClientID}}, "", "")
	ts.form(t, "/oauth2/introspect", url.Values{"token": {tok["access_token"].(string)}}, cl.ClientID, cl.ClientSecret)
	ts.form(t, "/oauth2/revoke", url.Values{"token": {tok["access_token"].(string)}}, cl.ClientID, cl.ClientSecret)
	ds.mu.Lock()
	defer ds.mu.Unlock()
	if len(ds.without) > 0 {
		t.Errorf("OAuth2 store calls without a deadline: %v", ds.without)
	}
}

// Only a confidential client (HTTP Basic with its secret) may introspect; an
// access token, or the first-party public client, may not.
func TestIntrospectionNeedsConfidentialClient(t *testing.T) {
	ts := startService(t, nil, nil)
	u := ts.register(t, "snoop")
	victim := ts.register(t, "victim")
	introspect := func(setAuth func(*http.Request)) int {
		req, _ := http.NewRequest("POST", ts.base+"/oauth2/introspect", strings.NewReader(url.Values{"token": {victim.Token}}.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		setAuth(req)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	tests := []struct {
		name string
		auth func(*http.Request)
	}{
		{"user access token", func(r *http.Request) { r.Header.Set("Authorization", "Bearer "+u.Token) }},
		{"first-party public client", func(r *http.Request) { r.SetBasicAuth(oauth.FirstPartyClientID, "") }},
		{"nothing", func(*http.Request) {}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if code := introspect(tt.auth); code != http.StatusUnauthorized {
				t.Errorf("introspect by %s = %d, want 401", tt.name, code)
			}
		})
	}
	var cl clientJSON
	ts.call(t, "POST", "/api/v1/auth/clients", u.Token, map[string]any{}, &cl)
	if code := introspect(func(r *http.Request) { r.SetBasicAuth(cl.ClientID, cl.ClientSecret) }); code != 200 {
		t.Errorf("introspect by a confidential client = %d, want 200", code)
	}
}

// Discovery metadata names the configured public URL, never one built from
// the request's Host or X-Forwarded-Proto.
func TestDiscoveryIgnoresRequestHost(t *testing.T) {
	tests := []struct {
		name, publicURL, want string
	}{
		{"default: the HTTP address", "", ""},
		{"configured", "https://auth.example.com/", "https://auth.example.com"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ts := startService(t, nil, func(c *Config) { c.PublicURL = tt.publicURL })
			want := tt.want
			if want == "" {
				want = ts.base
			}
			req, _ := http.NewRequest("GET", ts.base+"/.well-known/oauth-authorization-server", nil)
			req.Host = "evil.example"
			req.Header.Set("X-Forwarded-Proto", "https")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var meta map[string]any
			_ = json.NewDecoder(resp.Body).Decode(&meta)
			for _, k := range []string{"token_endpoint", "introspection_endpoint", "revocation_endpoint", "jwks_uri"} {
				if got, _ := meta[k].(string); !strings.HasPrefix(got, want+"/") {
					t.Errorf("metadata %s = %q, want under %s", k, got, want)
				}
			}
		})
	}
}
