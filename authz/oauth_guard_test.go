package authz

import (
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"

	"github.com/leakytokens/leaky/authz/oauth"
)

// TestIntrospectionLimitedToOwnTokensOrAdmin: a confidential client reads
// its own tokens; another client's, or a user's refresh token, are
// inactive to it unless it acts as ADMIN.
func TestIntrospectionLimitedToOwnTokensOrAdmin(t *testing.T) {
	ts := startService(t, nil, nil)
	snoop := ts.register(t, "snooper")
	victim := ts.register(t, "victim")
	newClient := func(bearer string, roles []string) clientJSON {
		var cl clientJSON
		if code := ts.call(t, "POST", "/api/v1/auth/clients", bearer, map[string]any{"roles": roles}, &cl); code != http.StatusCreated {
			t.Fatalf("create client = %d", code)
		}
		return cl
	}
	snoopClient := newClient(snoop.Token, nil)
	other := newClient(victim.Token, nil)
	admin := ts.adminToken(t)
	adminClient := newClient(admin, []string{"ADMIN"})
	adminUserClient := newClient(admin, nil) // owned by ADMIN, holds USER only
	code, tok := ts.form(t, "/oauth2/token", url.Values{"grant_type": {"client_credentials"}}, snoopClient.ClientID, snoopClient.ClientSecret)
	if code != http.StatusOK {
		t.Fatalf("client_credentials = %d", code)
	}
	own, _ := tok["access_token"].(string)
	for _, c := range []struct {
		name   string
		caller clientJSON
		token  string
		active bool
	}{
		{"own access token", snoopClient, own, true},
		{"a user's refresh token", snoopClient, victim.RefreshToken, false},
		{"a user's access token", snoopClient, victim.Token, false},
		{"another client's access token", other, own, false},
		{"a USER client of an ADMIN, a user's refresh token", adminUserClient, victim.RefreshToken, false},
		{"an ADMIN client, a user's refresh token", adminClient, victim.RefreshToken, true},
		{"an ADMIN client, another client's access token", adminClient, own, true},
	} {
		code, body := ts.form(t, "/oauth2/introspect", url.Values{"token": {c.token}}, c.caller.ClientID, c.caller.ClientSecret)
		if code != http.StatusOK || body["active"] != c.active {
			t.Errorf("%s: introspect = %d %v, want 200 active %v", c.name, code, body, c.active)
		}
		if !c.active && (body["sub"] != nil || body["client_id"] != nil) {
			t.Errorf("%s: an inactive answer tells %v", c.name, body)
		}
	}
}

// TestMetadataAdvertisesWhatEndpointsAccept: for each endpoint and each
// client authentication method, the method is in the metadata exactly when
// the endpoint accepts it.
func TestMetadataAdvertisesWhatEndpointsAccept(t *testing.T) {
	ts := startService(t, nil, nil)
	u := ts.register(t, "metauser")
	var cl clientJSON
	if code := ts.call(t, "POST", "/api/v1/auth/clients", u.Token, map[string]any{}, &cl); code != http.StatusCreated {
		t.Fatalf("create client = %d", code)
	}
	resp, err := http.Get(ts.base + "/.well-known/oauth-authorization-server")
	if err != nil {
		t.Fatal(err)
	}
	var meta map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&meta)
	resp.Body.Close()
	if _, ok := meta["token_endpoint_auth_signing_alg_values_supported"]; ok {
		t.Error("metadata lists signing algorithms for JWT client authentication, which no endpoint accepts")
	}
	// accepted sends one request to endpoint authenticated by method and
	// reports whether it was accepted (200).
	accepted := func(endpoint, method string) bool {
		var form url.Values
		switch endpoint {
		case "token":
			form = url.Values{"grant_type": {"client_credentials"}}
			if method == "none" {
				form = url.Values{"grant_type": {"refresh_token"}, "refresh_token": {ts.register(t, "metanone").RefreshToken}}
			}
		case "introspection":
			form = url.Values{"token": {u.Token}}
		case "revocation":
			form = url.Values{"token": {"unknown-token"}}
		}
		id, secret := cl.ClientID, cl.ClientSecret
		if method == "none" {
			id = oauth.FirstPartyClientID
		}
		if method != "client_secret_basic" {
			form.Set("client_id", id)
			if method == "client_secret_post" {
				form.Set("client_secret", secret)
			}
		}
		req, _ := http.NewRequest("POST", ts.base+"/oauth2/"+map[string]string{"token": "token", "introspection": "introspect", "revocation": "revoke"}[endpoint], strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		if method == "client_secret_basic" {
			req.SetBasicAuth(url.QueryEscape(id), url.QueryEscape(secret))
		}
		code, _ := do(t, req)
		return code == http.StatusOK
	}
	for _, endpoint := range []string{"token", "introspection", "revocation"} {
		raw, _ := meta[endpoint+"_endpoint_auth_methods_supported"].([]any)
		var advertised []string
		for _, m := range raw {
			advertised = append(advertised, m.(string))
		}
		for _, method := range []string{"client_secret_basic", "client_secret_post", "none"} {
			if got, want := accepted(endpoint, method), slices.Contains(advertised, method); got != want {
				t.Errorf("%s endpoint with %s: accepted %v, advertised %v (%v)", endpoint, method, got, want, advertised)
			}
		}
	}
}
