package authz

import (
	"maps"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/golang-jwt/jwt/v5"
	"github.com/google/go-cmp/cmp"

	"github.com/leakytokens/leaky/authz/oauth"
	"github.com/leakytokens/leaky/internal/contract"
	"github.com/leakytokens/leaky/internal/policy"
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
		// Underscore spellings an upstream might fold into the real names.
		"x_leaky_user_id": "someone-else", "x_leaky_tier": "admin", "x-leaky_estimate": "1", "x_leaky-roles": "ADMIN",
		"x_leaky_org": "acme",
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
		{"api key, no body: a forged estimate is replaced by 1", "/openai/v1/models", "",
			with(forgedAll, map[string]string{"x-api-key": key.APIKey}),
			map[string]string{contract.HeaderUserID: alice.UserID, contract.HeaderTier: "free", contract.HeaderRoles: "USER",
				contract.HeaderProvider: "openai", contract.HeaderEstimate: "1"}},
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

// A client_credentials token issued before tokens carried their owner
// would be charged to the client's own bucket: it is refused, while a
// token naming its owner, and a user's own token, are let through.
func TestCheckClientTokenWithoutOwner(t *testing.T) {
	ts := startService(t, nil, nil)
	owner := ts.register(t, "owner-less")
	kid := ts.ring.Set().KID()
	sign := func(claims jwt.MapClaims) string {
		t.Helper()
		now := time.Now()
		base := jwt.MapClaims{"iss": ts.cfg.Issuer, "aud": ts.cfg.Audience, "exp": now.Add(time.Hour).Unix(),
			"iat": now.Unix(), "roles": []string{"USER"}}
		maps.Copy(base, claims)
		tok := jwt.NewWithClaims(jwt.SigningMethodRS256, base)
		tok.Header["kid"] = kid
		s, err := tok.SignedString(signingKey(t, ts, kid))
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	tests := []struct {
		name   string
		claims jwt.MapClaims
		want   int // 0: OK, charged to owner.UserID
	}{
		{"client token without owner", jwt.MapClaims{"sub": "svc_old", "client_id": "svc_old"}, 401},
		{"client token with an empty owner", jwt.MapClaims{"sub": "svc_old", "client_id": "svc_old", "owner": ""}, 401},
		{"client token with its owner", jwt.MapClaims{"sub": "svc_new", "client_id": "svc_new", "owner": owner.UserID,
			"owner_roles": []string{"USER"}}, 0},
		{"first-party token", jwt.MapClaims{"sub": owner.UserID, "client_id": oauth.FirstPartyClientID}, 0},
		{"login token", jwt.MapClaims{"sub": owner.UserID}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := ts.check(t, "/openai/v1/chat/completions", map[string]string{"authorization": "Bearer " + sign(tt.claims)}, chatBody)
			if tt.want != 0 {
				if got := deniedStatus(resp); got != tt.want {
					t.Errorf("Check(%s) = %d, want %d (%v)", tt.name, got, tt.want, resp)
				}
				return
			}
			if got := okHeaders(resp)[contract.HeaderUserID]; got != owner.UserID {
				t.Errorf("Check(%s) charged %q, want %s (%v)", tt.name, got, owner.UserID, resp)
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

// Admin paths are judged by every reading of the path an upstream might
// make: a spelling any reading routes to an admin path is refused 403 to a
// USER and let through for an ADMIN; a segment some reading turns into a
// dot-segment (but that is not one as sent) is refused 400 to everyone, as
// it would climb out of, or into, the admin prefix for some upstream; near
// misses are not admin paths.
func TestCheckAdminPathSpellings(t *testing.T) {
	ts := startService(t, nil, nil)
	user := map[string]string{"authorization": "Bearer " + ts.register(t, "spelling").Token}
	admin := map[string]string{"authorization": "Bearer " + ts.adminToken(t)}
	const (
		isAdmin = iota
		notAdmin
		ambiguous // 400 to everyone
	)
	tests := []struct {
		path string
		want int
	}{
		{"/api/v1/admin/users", isAdmin},
		{"/api/v1/admin;x/users", isAdmin},
		{"/api/v1/admin\\users", isAdmin},
		{"/API/V1/ADMIN/users", isAdmin},
		{"/api/v1/%2561dmin/users", isAdmin},
		{"/Api/v1/Admin", isAdmin},
		{"/api/v1;x/admin/users", isAdmin},
		{"/api/v1/admin%3bx/users", isAdmin},
		{"/api/v1/admin%2fusers", isAdmin},
		{"/api/v1/admin%252Fusers", isAdmin},
		{"/api/v1%5cadmin/users", isAdmin},
		{"/api/v1/admin./users", isAdmin},
		{"/api/v1/admin%20/users", isAdmin},
		{"/api/v1/admin%00/users", isAdmin},
		{"/api/v1/admin%3f/users", isAdmin},
		{"/api/v1/%25252561dmin/users", isAdmin},   // four layers of escapes
		{"/api/v1/%2525252561dmin/users", isAdmin}, // five: too deep, judged admin
		// A '?' that appears only once decoded: cut there, the path is
		// /api/v1/x; kept, it is /api/v1/admin/users.
		{"/api/v1/x%3F/../admin/users", isAdmin},
		{"/api/v1/x%253f/../admin/users", isAdmin},
		{"/api/v1/x%23/../admin/users", isAdmin},
		// Plain dot-segments: an upstream that resolves them and one that
		// does not both count.
		{"/api/v1/x/../admin/users", isAdmin},
		{"/api/v1/admin/../users", isAdmin},
		{"/api/v1/./admin/users", isAdmin},
		// Hidden dot-segments, in and out of the admin prefix.
		{"/api/v1/admin/..;/users", ambiguous},
		{"/api/v1/admin/..%3b/users", ambiguous},
		{"/api/v1/admin/..%3B/users", ambiguous},
		{"/api/v1/admin/..%20/users", ambiguous},
		{"/api/v1/admin/..%00/users", ambiguous},
		{"/api/v1/admin/..%09/users", ambiguous},
		{"/api/v1/admin/..%0d%0a/users", ambiguous},
		{"/api/v1/admin/..;x/users", ambiguous},
		{"/api/v1/admin/..;jsessionid=1/users", ambiguous},
		{"/api/v1/admin/.;/users", ambiguous},
		{"/api/v1/admin/%2e%2e;/users", ambiguous},
		{"/api/v1/admin/%2E%2e/users", ambiguous},
		{"/api/v1/admin/.%2E/users", ambiguous},
		{"/api/v1/admin/%252e%252e/users", ambiguous},
		{"/api/v1/admin/..%2f/users", ambiguous},
		{"/api/v1/admin/..%2F..%2Fusers", ambiguous},
		{"/api/v1/admin/..%5c/users", ambiguous},
		{"/api/v1/admin/..\\users", ambiguous},
		{"/api/v1/admin/..%3f/users", ambiguous},
		{"/api/v1/admin/.../users", ambiguous},
		{"/api/v1/admin/.. ./users", ambiguous},
		{"/api/v1/x/..;/admin/users", ambiguous},
		{"/api/v1/x/..\\admin/users", ambiguous},
		{"/api/v1/x/%2e%2e/admin/users", ambiguous},
		{"/openai/v1/x/..;/..;/..;/api/v1/admin/users", ambiguous},
		{"/api/v1/administrators", notAdmin},
		{"/api/v1/admins/x", notAdmin},
		{"/openai/v1/admin/users", notAdmin},
		{"/api/v1/adm%69nistrators", notAdmin},
		{"/api/v1/admin..x/users", notAdmin},
		{"/api/v1/auth/me;x", notAdmin},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			asUser, asAdmin := ts.check(t, tt.path, user, ""), ts.check(t, tt.path, admin, "")
			switch tt.want {
			case isAdmin:
				if got := deniedStatus(asUser); got != 403 {
					t.Errorf("Check(%q) as USER = %d, want 403 (%v)", tt.path, got, asUser)
				}
				if asAdmin.GetOkResponse() == nil {
					t.Errorf("Check(%q) as ADMIN = %d, want OK", tt.path, deniedStatus(asAdmin))
				}
			case notAdmin:
				if asUser.GetOkResponse() == nil {
					t.Errorf("Check(%q) as USER = %d, want OK", tt.path, deniedStatus(asUser))
				}
			case ambiguous:
				for who, resp := range map[string]*authv3.CheckResponse{"USER": asUser, "ADMIN": asAdmin} {
					if got := deniedStatus(resp); got != 400 {
						t.Errorf("Check(%q) as %s = %d, want 400 (%v)", tt.path, who, got, resp)
					}
				}
			}
		})
	}
}

// A Check carrying the largest body a gateway may be configured to send
// (policy.MaxMaxRequestBytes, above gRPC's default 4 MiB receive limit) is
// answered, not refused by the transport: a refusal there would put every
// large request under the gateway's failure mode.
func TestCheckAcceptsTheLargestConfigurableBody(t *testing.T) {
	ts := startService(t, nil, nil)
	alice := ts.register(t, "big-body-alice")
	text := strings.Repeat("a", policy.MaxMaxRequestBytes-64)
	body := `{"model":"gpt-4o","messages":[{"role":"user","content":"` + text + `"}]}`
	resp := ts.check(t, "/openai/v1/chat/completions", map[string]string{"authorization": "Bearer " + alice.Token}, body)
	est, err := strconv.Atoi(okHeaders(resp)[contract.HeaderEstimate])
	if err != nil || est < len(text)/4 {
		t.Errorf("estimate %q for %d bytes of text, want at least %d (answer %v)", okHeaders(resp)[contract.HeaderEstimate], len(text), len(text)/4, resp.GetStatus())
	}
}
