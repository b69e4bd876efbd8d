package authz

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/leakytokens/leaky/authz/oauth"
	"github.com/leakytokens/leaky/internal/testenv"
)

// TestStoreOutageIs503: with PostgreSQL stopped (SIGSTOP: the deadline
// runs out) or killed (connections refused), every endpoint that needs the
// store says it is unavailable: 503 with Retry-After, the REST API with
// its JSON error body, the OAuth2 endpoints with temporarily_unavailable,
// never 500, 401 invalid_client, an inactive token or a revocation that
// did not happen.
func TestStoreOutageIs503(t *testing.T) {
	pg := testenv.StartPostgres(t)
	ts, _ := startPG(t, pg.URL, nil)
	u := ts.register(t, "outage")
	var cl clientJSON
	if code := ts.call(t, "POST", "/api/v1/auth/clients", u.Token, map[string]any{}, &cl); code != http.StatusCreated {
		t.Fatalf("create client = %d", code)
	}
	code, tok := ts.form(t, "/oauth2/token", url.Values{"grant_type": {"client_credentials"}}, cl.ClientID, cl.ClientSecret)
	if code != http.StatusOK {
		t.Fatalf("client_credentials = %d", code)
	}
	access, _ := tok["access_token"].(string)
	login := `{"username":"outage","password":"password-outage"}`
	type req struct {
		name, path, body, basicID, basicSecret string
		oauth                                  bool
	}
	all := []req{
		{"login", "/api/v1/auth/login", login, "", "", false},
		{"register", "/api/v1/auth/register", `{"username":"later","email":"later@example.com","password":"password-later"}`, "", "", false},
		{"me", "/api/v1/auth/me", "", "", "", false},
		{"list api keys", "/api/v1/auth/api-keys", "", "", "", false},
		{"token client_credentials", "/oauth2/token", url.Values{"grant_type": {"client_credentials"}}.Encode(), cl.ClientID, cl.ClientSecret, true},
		{"token client_credentials in the form", "/oauth2/token", url.Values{"grant_type": {"client_credentials"}, "client_id": {cl.ClientID}, "client_secret": {cl.ClientSecret}}.Encode(), "", "", true},
		{"token refresh_token", "/oauth2/token", url.Values{"grant_type": {"refresh_token"}, "refresh_token": {u.RefreshToken}, "client_id": {oauth.FirstPartyClientID}}.Encode(), "", "", true},
		{"introspect", "/oauth2/introspect", url.Values{"token": {access}}.Encode(), cl.ClientID, cl.ClientSecret, true},
		{"revoke", "/oauth2/revoke", url.Values{"token": {u.RefreshToken}, "client_id": {oauth.FirstPartyClientID}}.Encode(), "", "", true},
	}
	send := func(t *testing.T, c req) {
		method, ctype := "POST", "application/json"
		if c.oauth {
			ctype = "application/x-www-form-urlencoded"
		} else if c.body == "" {
			method = "GET"
		}
		r, _ := http.NewRequest(method, ts.base+c.path, bytes.NewReader([]byte(c.body)))
		r.Header.Set("Content-Type", ctype)
		if c.basicID != "" {
			r.SetBasicAuth(c.basicID, c.basicSecret)
		} else if !c.oauth {
			r.Header.Set("Authorization", "Bearer "+u.Token)
		}
		resp, err := http.DefaultClient.Do(r)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		defer resp.Body.Close()
		var body struct {
			Error   string `json:"error"`
			Message string `json:"message"`
			Desc    string `json:"error_description"`
		}
		_ = json.NewDecoder(resp.Body).Decode(&body)
		want, text := "unavailable", body.Message
		if c.oauth {
			want, text = "temporarily_unavailable", body.Desc
		}
		if resp.StatusCode != http.StatusServiceUnavailable || body.Error != want || !strings.Contains(text, "store") ||
			resp.Header.Get("Retry-After") == "" {
			t.Errorf("%s during the outage = %d %+v (Retry-After %q), want 503 %s saying the store is unavailable",
				c.name, resp.StatusCode, body, resp.Header.Get("Retry-After"), want)
		}
	}
	t.Run("stopped", func(t *testing.T) {
		pg.Stop()
		defer pg.Cont()
		// Each waits for the REST deadline (5 s): two show the deadline's answer.
		send(t, all[0])
		send(t, all[4])
	})
	t.Run("killed", func(t *testing.T) {
		checkpoint(t, pg.URL)
		pg.Kill()
		for _, c := range all {
			send(t, c)
		}
	})
	if strings.Contains(ts.logs.String(), `"level":"ERROR"`) {
		t.Errorf("the outage was logged as an error, not a warning:\n%s", tail(ts.logs.String(), 2000))
	}
}
