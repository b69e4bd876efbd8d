package authz

import (
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/golang-jwt/jwt/v5"
	"github.com/google/go-cmp/cmp"

	"github.com/leakytokens/leaky/internal/contract"
)

// envoyApply applies an OK CheckResponse to the request's headers the way
// Envoy's ext_authz filter does: first every header of the response, by
// its append action, then headers_to_remove. What is left is what the
// rate-limit filter reads and the upstream receives.
func envoyApply(t *testing.T, req map[string]string, resp *authv3.CheckResponse) map[string]string {
	t.Helper()
	ok := resp.GetOkResponse()
	if ok == nil {
		t.Fatalf("Check = %v, want OK", resp)
	}
	out := map[string]string{}
	for k, v := range req {
		out[strings.ToLower(k)] = v
	}
	for _, o := range ok.GetHeaders() {
		k, v := strings.ToLower(o.GetHeader().GetKey()), o.GetHeader().GetValue()
		old, exists := out[k]
		switch o.GetAppendAction() {
		case corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD:
			out[k] = v
		case corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD:
			if exists {
				v = old + "," + v
			}
			out[k] = v
		case corev3.HeaderValueOption_ADD_IF_ABSENT:
			if !exists {
				out[k] = v
			}
		case corev3.HeaderValueOption_OVERWRITE_IF_EXISTS:
			if exists {
				out[k] = v
			}
		}
	}
	for _, k := range ok.GetHeadersToRemove() {
		delete(out, strings.ToLower(k))
	}
	return out
}

// The headers authz computes must survive Envoy applying the answer: a
// name both set and listed in headers_to_remove would reach the rate-limit
// filter removed, and the request would be charged to nobody.
func TestCheckHeadersAsEnvoyApplies(t *testing.T) {
	ts := startService(t, nil, nil)
	alice := ts.register(t, "envoy-alice")
	key := ts.newKey(t, alice.Token, nil)
	forgedAll := map[string]string{
		contract.HeaderUserID: "someone-else", contract.HeaderTier: "admin", contract.HeaderRoles: "ADMIN",
		contract.HeaderProvider: "qwen", contract.HeaderEstimate: "1", contract.HeaderOrgID: "acme",
		contract.HeaderPrefix + "other": "x",
	}
	with := func(base map[string]string, more map[string]string) map[string]string {
		out := maps.Clone(base)
		maps.Copy(out, more)
		return out
	}
	tests := []struct {
		name, path, body string
		headers          map[string]string
		want             map[string]string
	}{
		{"jwt, forged identity", "/openai/v1/chat/completions", chatBody,
			with(forgedAll, map[string]string{"authorization": "Bearer " + alice.Token, "content-type": "application/json"}),
			map[string]string{contract.HeaderUserID: alice.UserID, contract.HeaderTier: "free", contract.HeaderRoles: "USER",
				contract.HeaderProvider: "openai", contract.HeaderEstimate: "114", "content-type": "application/json"}},
		{"api key, no body: a forged estimate goes", "/openai/v1/models", "",
			with(forgedAll, map[string]string{"x-api-key": key.APIKey}),
			map[string]string{contract.HeaderUserID: alice.UserID, contract.HeaderTier: "free", contract.HeaderRoles: "USER",
				contract.HeaderProvider: "openai"}},
		{"own API keeps the credential", "/api/v1/auth/me", "",
			with(forgedAll, map[string]string{"authorization": "Bearer " + alice.Token}),
			map[string]string{contract.HeaderUserID: alice.UserID, contract.HeaderTier: "free", contract.HeaderRoles: "USER",
				"authorization": "Bearer " + alice.Token}},
		{"public path: no identity at all", "/api/v1/auth/login", "",
			with(forgedAll, map[string]string{"authorization": "Bearer " + alice.Token}),
			map[string]string{"authorization": "Bearer " + alice.Token}},
		{"public path outside the own API: credential removed", "/.well-known/jwks.json", "",
			with(forgedAll, map[string]string{"x-api-key": key.APIKey, contract.HeaderOrg: "acme"}),
			map[string]string{contract.HeaderOrg: "acme"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := envoyApply(t, tt.headers, ts.check(t, tt.path, tt.headers, tt.body))
			if d := cmp.Diff(tt.want, got); d != "" {
				t.Errorf("headers after Envoy applies Check(%s) (-want +got):\n%s", tt.path, d)
			}
		})
	}
}

// A public path ignores credentials: a client holding a stale token or a
// revoked key can still log in, register, refresh and fetch the key set.
func TestCheckPublicPathsIgnoreCredentials(t *testing.T) {
	ts := startService(t, nil, nil)
	u := ts.register(t, "stale")
	set := ts.ring.Set()
	expired := jwt.NewWithClaims(jwt.SigningMethodRS256, jwt.MapClaims{"sub": u.UserID, "iss": ts.cfg.Issuer,
		"aud": ts.cfg.Audience, "exp": time.Now().Add(-time.Hour).Unix(), "iat": time.Now().Add(-2 * time.Hour).Unix()})
	expired.Header["kid"] = set.KID()
	stale, err := expired.SignedString(signingKey(t, ts, set.KID()))
	if err != nil {
		t.Fatal(err)
	}
	unknownKey := forgeKey("k_doesnotexist0")
	creds := map[string]map[string]string{
		"expired bearer":        {"authorization": "Bearer " + stale},
		"unknown api key":       {"x-api-key": unknownKey},
		"unknown bearer key":    {"authorization": "Bearer " + unknownKey},
		"malformed bearer":      {"authorization": "Bearer a b"},
		"basic auth":            {"authorization": "Basic YTpi"},
		"both credentials":      {"authorization": "Bearer " + stale, "x-api-key": unknownKey},
		"oversized credentials": {"authorization": "Bearer " + strings.Repeat("a", 64<<10)},
	}
	paths := map[string]bool{ // path: the service's own API, whose credentials stay
		"/api/v1/auth/login": true, "/api/v1/auth/register": true, "/oauth2/token": true, "/oauth2/jwks": true,
		"/.well-known/jwks.json": false, "/.well-known/oauth-authorization-server": false,
	}
	// The control: the same stale token is refused where credentials count.
	if got := deniedStatus(ts.check(t, "/openai/v1/chat/completions", creds["expired bearer"], "")); got != 401 {
		t.Fatalf("Check(expired bearer, LLM path) = %d, want 401", got)
	}
	for path, self := range paths {
		for name, h := range creds {
			t.Run(path+" "+name, func(t *testing.T) {
				resp := ts.check(t, path, h, "")
				if resp.GetOkResponse() == nil {
					t.Fatalf("Check(%s, %s) = %d, want OK", path, name, deniedStatus(resp))
				}
				if got := okHeaders(resp); len(got) != 0 {
					t.Errorf("Check(%s, %s) set %v, want no identity", path, name, got)
				}
				removed := resp.GetOkResponse().GetHeadersToRemove()
				for k := range h {
					if slices.Contains(removed, k) == self {
						t.Errorf("Check(%s, %s) headers_to_remove = %v: %s removed = %v, want %v", path, name, removed, k, !self, !self)
					}
				}
			})
		}
	}
}

// Admin paths are judged by the widest reading of the path: every spelling
// an upstream might route to an admin path is refused to a USER and let
// through for an ADMIN; near misses are not admin paths.
func TestCheckAdminPathSpellings(t *testing.T) {
	ts := startService(t, nil, nil)
	user := map[string]string{"authorization": "Bearer " + ts.register(t, "spelling").Token}
	admin := map[string]string{"authorization": "Bearer " + ts.adminToken(t)}
	tests := []struct {
		path  string
		admin bool
	}{
		{"/api/v1/admin/users", true},
		{"/api/v1/admin;x/users", true},
		{"/api/v1/admin\\users", true},
		{"/API/V1/ADMIN/users", true},
		{"/api/v1/%2561dmin/users", true},
		{"/Api/v1/Admin", true},
		{"/api/v1;x/admin/users", true},
		{"/api/v1/admin%3bx/users", true},
		{"/api/v1/admin%2fusers", true},
		{"/api/v1/admin%252Fusers", true},
		{"/api/v1%5cadmin/users", true},
		{"/api/v1/admin./users", true},
		{"/api/v1/admin%20/users", true},
		{"/api/v1/admin%00/users", true},
		{"/api/v1/admin%3f/users", true},
		{"/api/v1/x/..\\admin/users", true},
		{"/api/v1/x/%2e%2e/admin/users", true},
		{"/api/v1/%25252561dmin/users", true},   // four layers of escapes
		{"/api/v1/%2525252561dmin/users", true}, // five: too deep, judged admin
		{"/api/v1/administrators", false},
		{"/api/v1/admins/x", false},
		{"/openai/v1/admin/users", false},
		{"/api/v1/adm%69nistrators", false},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			resp := ts.check(t, tt.path, user, "")
			if got := deniedStatus(resp) == 403; got != tt.admin {
				t.Errorf("Check(%q) as USER refused 403 = %v, want %v (%v)", tt.path, got, tt.admin, resp)
			}
			if resp := ts.check(t, tt.path, admin, ""); resp.GetOkResponse() == nil {
				t.Errorf("Check(%q) as ADMIN = %d, want OK", tt.path, deniedStatus(resp))
			}
		})
	}
}
