package authz

import (
	"context"
	"encoding/json"
	"hash/crc32"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/google/go-cmp/cmp"

	"github.com/leakytokens/leaky/authz/store"
	"github.com/leakytokens/leaky/internal/contract"
	"github.com/leakytokens/leaky/internal/serve"
)

const chatBody = `{"model":"gpt-4o","messages":[{"role":"user","content":"12345678"}],"max_tokens":100}`

func TestCheckJWT(t *testing.T) {
	ts := startService(t, nil, nil)
	alice := ts.register(t, "alice")
	resp := ts.check(t, "/openai/v1/chat/completions?x=1", map[string]string{
		"authorization":                   "Bearer " + alice.Token,
		contract.HeaderUserID:             "someone-else",
		contract.HeaderTier:               "admin",
		contract.HeaderPrefix + "anyting": "x",
		"content-type":                    "application/json",
	}, chatBody)
	if resp.GetOkResponse() == nil {
		t.Fatalf("Check(jwt) = %v, want OK", resp)
	}
	want := map[string]string{
		contract.HeaderUserID: alice.UserID, contract.HeaderTier: "free", contract.HeaderRoles: "USER",
		contract.HeaderProvider: "openai", contract.HeaderEstimate: "114",
	}
	if d := cmp.Diff(want, okHeaders(resp)); d != "" {
		t.Errorf("OK headers (-want +got):\n%s", d)
	}
	// The forged x-leaky-user-id and x-leaky-tier are overwritten by the
	// headers set, so they are not removed (Envoy removes after it sets).
	wantRemoved := []string{contract.HeaderPrefix + "anyting", "authorization"}
	if d := cmp.Diff(wantRemoved, resp.GetOkResponse().GetHeadersToRemove()); d != "" {
		t.Errorf("headers_to_remove (-want +got):\n%s", d)
	}
}

func TestCheckAPIKey(t *testing.T) {
	ts := startService(t, nil, nil)
	bob := ts.register(t, "bob")
	key := ts.newKey(t, bob.Token, map[string]any{"name": "ci"})
	tests := []struct {
		name        string
		headers     map[string]string
		wantRemoved []string
	}{
		{"x-api-key", map[string]string{"x-api-key": key.APIKey}, []string{"x-api-key"}},
		{"bearer api key", map[string]string{"authorization": "Bearer " + key.APIKey}, []string{"authorization"}},
		{"forged identity", map[string]string{"x-api-key": key.APIKey, contract.HeaderUserID: "admin", contract.HeaderOrgID: "acme"},
			[]string{contract.HeaderOrgID, "x-api-key"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := ts.check(t, "/gemini/v1beta/models/x:generateContent", tt.headers,
				`{"contents":[{"parts":[{"text":"1234"}]}],"generationConfig":{"maxOutputTokens":10}}`)
			if resp.GetOkResponse() == nil {
				t.Fatalf("Check = %v, want OK", resp)
			}
			want := map[string]string{contract.HeaderUserID: bob.UserID, contract.HeaderTier: "free", contract.HeaderRoles: "USER",
				contract.HeaderProvider: "gemini", contract.HeaderEstimate: "24"}
			if d := cmp.Diff(want, okHeaders(resp)); d != "" {
				t.Errorf("OK headers (-want +got):\n%s", d)
			}
			got := resp.GetOkResponse().GetHeadersToRemove()
			if d := cmp.Diff(tt.wantRemoved, got); d != "" {
				t.Errorf("headers_to_remove (-want +got):\n%s", d)
			}
		})
	}
}

func TestCheckDenied(t *testing.T) {
	ts := startService(t, nil, nil)
	carol := ts.register(t, "carol")
	key := ts.newKey(t, carol.Token, nil)
	// One character of the secret changed (never to itself: the key is
	// random, and 1 in 62 times that character is already "x"), so the
	// checksum no longer matches.
	i := len(key.APIKey) - 7
	repl := "x"
	if key.APIKey[i] == 'x' {
		repl = "y"
	}
	wrongSecret := key.APIKey[:i] + repl + key.APIKey[i+1:]
	tests := []struct {
		name    string
		path    string
		headers map[string]string
		status  int
		code    string
	}{
		{"no credentials", "/openai/v1/chat", nil, 401, "unauthenticated"},
		{"basic auth", "/openai/v1/chat", map[string]string{"authorization": "Basic YTpi"}, 401, "unauthenticated"},
		{"two bearer tokens", "/openai/v1/chat", map[string]string{"authorization": "Bearer " + carol.Token + ", Bearer " + carol.Token}, 401, "unauthenticated"},
		{"garbage jwt", "/openai/v1/chat", map[string]string{"authorization": "Bearer abc.def.ghi"}, 401, "unauthenticated"},
		{"oversized header", "/openai/v1/chat", map[string]string{"authorization": "Bearer " + strings.Repeat("a", 64<<10)}, 401, "unauthenticated"},
		{"api key bad checksum", "/openai/v1/chat", map[string]string{"x-api-key": wrongSecret}, 401, "unauthenticated"},
		{"seed key format", "/openai/v1/chat", map[string]string{"x-api-key": "leaky_" + carol.UserID + "_" + strings.Repeat("a", 48)}, 401, "unauthenticated"},
		{"org not a member", "/openai/v1/chat", map[string]string{"authorization": "Bearer " + carol.Token, contract.HeaderOrg: "acme"}, 403, "forbidden_org"},
		{"org malformed", "/openai/v1/chat", map[string]string{"authorization": "Bearer " + carol.Token, contract.HeaderOrg: "../x"}, 403, "forbidden_org"},
		{"admin path as user", "/api/v1/admin/tiers", map[string]string{"authorization": "Bearer " + carol.Token}, 403, "forbidden_role"},
		{"admin path double slash", "//api/v1//admin/tiers", map[string]string{"authorization": "Bearer " + carol.Token}, 403, "forbidden_role"},
		{"admin path escaped", "/api/v1/%61dmin/tiers", map[string]string{"authorization": "Bearer " + carol.Token}, 403, "forbidden_role"},
		{"admin path dot segments", "/api/v1/x/../admin/tiers", map[string]string{"authorization": "Bearer " + carol.Token}, 403, "forbidden_role"},
		{"public prefix traversal", "/oauth2/../openai/v1/chat", nil, 401, "unauthenticated"},
		{"public prefix escaped traversal", "/oauth2/%2e%2e/openai/v1/chat", nil, 400, "invalid_request"},
		{"bad escape", "/openai/%zz", map[string]string{"authorization": "Bearer " + carol.Token}, 400, "invalid_request"},
		{"api key and bearer jwt", "/openai/v1/chat", map[string]string{"x-api-key": key.APIKey, "authorization": "Bearer " + carol.Token}, 401, "unauthenticated"},
		{"api key and bearer api key", "/openai/v1/chat", map[string]string{"x-api-key": key.APIKey, "authorization": "Bearer " + key.APIKey}, 401, "unauthenticated"},
		{"api key and basic auth", "/openai/v1/chat", map[string]string{"x-api-key": key.APIKey, "authorization": "Basic YTpi"}, 401, "unauthenticated"},
		{"admin path without slash", "/api/v1/admin", map[string]string{"authorization": "Bearer " + carol.Token}, 403, "forbidden_role"},
		{"admin path escaped slash", "/api/v1%2Fadmin/tiers", map[string]string{"authorization": "Bearer " + carol.Token}, 403, "forbidden_role"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := ts.check(t, tt.path, tt.headers, "")
			if got := deniedStatus(resp); got != tt.status {
				t.Fatalf("Check(%s) status = %d, want %d (%v)", tt.name, got, tt.status, resp)
			}
			var body serve.ErrorBody
			if err := json.Unmarshal([]byte(resp.GetDeniedResponse().GetBody()), &body); err != nil || body.Error != tt.code {
				t.Errorf("Check(%s) body = %q, want error %q", tt.name, resp.GetDeniedResponse().GetBody(), tt.code)
			}
			hdrs := map[string]string{}
			for _, h := range resp.GetDeniedResponse().GetHeaders() {
				hdrs[h.GetHeader().GetKey()] = h.GetHeader().GetValue()
			}
			if _, ok := hdrs["www-authenticate"]; ok != (tt.status == 401) {
				t.Errorf("Check(%s) www-authenticate present = %v, want %v", tt.name, ok, tt.status == 401)
			}
			if hdrs["content-type"] != "application/json" {
				t.Errorf("Check(%s) content-type = %q", tt.name, hdrs["content-type"])
			}
		})
	}
}

func TestCheckOrgAndAdmin(t *testing.T) {
	ts := startService(t, nil, nil)
	dave := ts.register(t, "dave")
	if code := ts.call(t, "POST", "/api/v1/auth/orgs", dave.Token, map[string]string{"id": "acme", "name": "Acme"}, nil); code != 201 {
		t.Fatalf("create org = %d", code)
	}
	// The old token predates the membership; a new login carries it.
	var fresh authResponse
	ts.call(t, "POST", "/api/v1/auth/login", "", map[string]string{"username": "dave", "password": "password-dave"}, &fresh)
	resp := ts.check(t, "/qwen/v1/chat/completions", map[string]string{"authorization": "Bearer " + fresh.Token, contract.HeaderOrg: "acme"}, "")
	if got := okHeaders(resp); got[contract.HeaderOrgID] != "acme" || got[contract.HeaderProvider] != "qwen" {
		t.Errorf("Check(member) headers = %v, want org acme, provider qwen", got)
	}
	if got := okHeaders(resp)[contract.HeaderEstimate]; got != "1" {
		t.Errorf("Check without a body: x-leaky-estimate %q, want 1 (the request still counts)", got)
	}
	// An API key resolves membership from the store.
	key := ts.newKey(t, dave.Token, nil)
	resp = ts.check(t, "/openai/x", map[string]string{"x-api-key": key.APIKey, contract.HeaderOrg: "acme"}, "")
	if got := okHeaders(resp)[contract.HeaderOrgID]; got != "acme" {
		t.Errorf("Check(api key, member) org = %q, want acme", got)
	}
	admin := ts.adminToken(t)
	resp = ts.check(t, "/api/v1/admin/tiers", map[string]string{"authorization": "Bearer " + admin}, `{"tokens":5}`)
	if got := okHeaders(resp); got[contract.HeaderTier] != "admin" || got[contract.HeaderEstimate] != "1027" {
		t.Errorf("Check(admin) headers = %v, want tier admin, estimate 1027", got)
	}
	// Public paths pass without credentials and without identity.
	resp = ts.check(t, "/api/v1/auth/login", map[string]string{contract.HeaderUserID: "x"}, "")
	if resp.GetOkResponse() == nil || okHeaders(resp)[contract.HeaderUserID] != "" {
		t.Errorf("Check(public) = %v, want OK without identity", resp)
	}
	if got := resp.GetOkResponse().GetHeadersToRemove(); !slices.Contains(got, contract.HeaderUserID) {
		t.Errorf("Check(public) headers_to_remove = %v, want x-leaky-user-id", got)
	}
}

// forgeKey builds a well-formed key (valid checksum) for id with a secret
// of the forger's choosing, as someone who saw a key id could.
func forgeKey(id string) string {
	const alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
	body := "lt_" + id + "_" + strings.Repeat("A", 33)
	c := crc32.ChecksumIEEE([]byte(body))
	var check [6]byte
	for i := 5; i >= 0; i-- {
		check[i] = alphabet[c%62]
		c /= 62
	}
	return body + string(check[:])
}

// countingStore counts API key lookups.
type countingStore struct {
	store.Store
	lookups atomic.Int64
}

func (c *countingStore) APIKeyByID(ctx context.Context, id string) (store.APIKey, error) {
	c.lookups.Add(1)
	return c.Store.APIKeyByID(ctx, id)
}

// The key caches of both replicas read one fake clock: lookups are counted
// and the TTL judged exactly, however slow the machine.
func TestCheckAPIKeyLifecycle(t *testing.T) {
	st := &countingStore{Store: store.NewMemory()}
	ttl := 300 * time.Millisecond
	clock := newFakeClock()
	a := startServiceWith(t, st, func(c *Config) { c.APIKeyCacheTTL = ttl }, clock.Now)
	b := startServiceWith(t, st, func(c *Config) { c.APIKeyCacheTTL = ttl; c.AdminUsername = "" }, clock.Now)
	erin := a.register(t, "erin")
	key := a.newKey(t, erin.Token, nil)
	h := map[string]string{"x-api-key": key.APIKey}

	// A bad checksum is refused before any lookup.
	before := st.lookups.Load()
	last := key.APIKey[len(key.APIKey)-1]
	repl := "0"
	if last == '0' {
		repl = "1"
	}
	bad := key.APIKey[:len(key.APIKey)-1] + repl
	if deniedStatus(a.check(t, "/openai/x", map[string]string{"x-api-key": bad}, "")) != 401 {
		t.Error("bad checksum accepted")
	}
	if n := st.lookups.Load() - before; n != 0 {
		t.Errorf("bad checksum made %d store lookups, want 0", n)
	}
	// A forged key with a real id and a valid checksum but the wrong secret
	// reaches the store and is refused there.
	before = st.lookups.Load()
	if deniedStatus(a.check(t, "/openai/x", map[string]string{"x-api-key": forgeKey(key.ID)}, "")) != 401 {
		t.Error("wrong secret with a valid checksum accepted")
	}
	if n := st.lookups.Load() - before; n != 1 {
		t.Errorf("forged key made %d lookups, want 1", n)
	}
	before = st.lookups.Load()
	// Repeated checks hit the cache.
	for range 5 {
		if a.check(t, "/openai/x", h, "").GetOkResponse() == nil {
			t.Fatal("valid key refused")
		}
	}
	if b.check(t, "/openai/x", h, "").GetOkResponse() == nil {
		t.Fatal("valid key refused on replica b")
	}
	if b.check(t, "/openai/x", map[string]string{"authorization": "Bearer " + erin.Token}, "").GetOkResponse() == nil {
		t.Fatal("replica b refused a JWT issued by replica a")
	}
	if n := st.lookups.Load() - before; n != 2 {
		t.Errorf("6 checks on 2 replicas made %d lookups, want 2", n)
	}
	// Revoke on a: refused on a at once, on b within the TTL.
	if code := a.call(t, "DELETE", "/api/v1/auth/api-keys/"+key.ID, erin.Token, nil, nil); code != 204 {
		t.Fatalf("revoke = %d, want 204", code)
	}
	if deniedStatus(a.check(t, "/openai/x", h, "")) != 401 {
		t.Error("revoked key accepted on the replica that revoked it")
	}
	clock.Advance(ttl)
	if deniedStatus(b.check(t, "/openai/x", h, "")) != 401 {
		t.Error("revoked key still accepted on replica b once its cache TTL ended")
	}
	// An expired key is refused: its expiry is an hour away in real time
	// (the API refuses one in the past) and passes on the fake clock.
	expiresAt := clock.Now().Add(time.Hour)
	exp := a.newKey(t, erin.Token, map[string]any{"expiresAt": expiresAt})
	eh := map[string]string{"x-api-key": exp.APIKey}
	if a.check(t, "/openai/x", eh, "").GetOkResponse() == nil {
		t.Fatal("key refused before its expiry")
	}
	clock.Advance(time.Hour + time.Second)
	if a.check(t, "/openai/x", eh, "").GetOkResponse() != nil {
		t.Fatal("expired key still accepted")
	}
	var body serve.ErrorBody
	_ = json.Unmarshal([]byte(a.check(t, "/openai/x", eh, "").GetDeniedResponse().GetBody()), &body)
	if !strings.Contains(body.Message, "expired") {
		t.Errorf("expired key message = %q, want it to say expired", body.Message)
	}
	if code := a.call(t, "POST", "/api/v1/auth/api-keys", erin.Token, map[string]any{"expiresAt": time.Now().Add(-time.Hour)}, nil); code != http.StatusBadRequest {
		t.Errorf("create key expiring in the past = %d, want 400", code)
	}
}

// Envoy sends the body as raw_body when pack_as_bytes is set.
func TestCheckRawBody(t *testing.T) {
	ts := startService(t, nil, nil)
	u := ts.register(t, "raw")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := ts.client.Check(ctx, &authv3.CheckRequest{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{
		Http: &authv3.AttributeContext_HttpRequest{Path: "/api/v1/tokens/consume", RawBody: []byte(`{"provider":"gemini","tokens":42}`),
			Headers: map[string]string{"authorization": "Bearer " + u.Token}}}}})
	if err != nil {
		t.Fatal(err)
	}
	got := okHeaders(resp)
	if got[contract.HeaderEstimate] != "42" || got[contract.HeaderProvider] != "gemini" {
		t.Errorf("Check(raw body) = %v, want estimate 42 and provider gemini from the body", got)
	}
}

// A public prefix lets a request through without credentials only when the
// path is canonical and the prefix ends at a segment boundary; a path that
// decodes or cleans into a public one is not public.
func TestCheckPublicPaths(t *testing.T) {
	ts := startService(t, nil, nil)
	tests := []struct {
		name   string
		path   string
		public bool
	}{
		{"login", "/api/v1/auth/login", true},
		{"register with query", "/api/v1/auth/register?x=1", true},
		{"oauth2 token", "/oauth2/token", true},
		{"well-known", "/.well-known/jwks.json", true},
		{"escaped dot-dot", "/openai/%2e%2e/oauth2/token", false},
		{"escaped dot-dot upper", "/openai/%2E%2E/oauth2/token", false},
		{"semicolon traversal", "/openai/v1/chat/completions;/../../../../oauth2/x", false},
		{"escaped slashes", "/openai%2F..%2F.well-known/x", false},
		{"escaped slashes in segment", "/openai/x%2F..%2F..%2F.well-known/x", false},
		{"dot-dot", "/openai/../oauth2/token", false},
		{"dot segment", "/oauth2/./token", false},
		{"double slash", "//oauth2/token", false},
		{"backslash", "/oauth2/..\\openai", false},
		{"escaped letter", "/oauth2/%74oken", false},
		{"semicolon", "/oauth2/token;x", false},
		{"prefix without boundary", "/api/v1/auth/registerX", false},
		{"prefix without boundary, login", "/api/v1/auth/login-as-admin", false},
		{"public prefix below", "/api/v1/auth/register/x", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := ts.check(t, tt.path, nil, "")
			if got := resp.GetOkResponse() != nil; got != tt.public {
				t.Errorf("Check(%q) without credentials OK = %v, want %v (%v)", tt.path, got, tt.public, resp)
			}
			if !tt.public && deniedStatus(resp) != 401 && deniedStatus(resp) != 400 {
				t.Errorf("Check(%q) status = %d, want 401 or 400", tt.path, deniedStatus(resp))
			}
		})
	}
}

// The service's own HTTP API authenticates its callers again: Check keeps
// their credentials there, and validate takes a Bearer token and a key.
func TestCheckSelfPathsKeepCredentials(t *testing.T) {
	ts := startService(t, nil, nil)
	u := ts.register(t, "selfie")
	key := ts.newKey(t, u.Token, nil)
	resp := ts.check(t, "/api/v1/auth/api-keys/validate", map[string]string{"authorization": "Bearer " + u.Token, "x-api-key": key.APIKey}, "")
	if resp.GetOkResponse() == nil {
		t.Fatalf("Check(validate with Bearer and X-Api-Key) = %v, want OK", resp)
	}
	if got := resp.GetOkResponse().GetHeadersToRemove(); slices.Contains(got, "authorization") || slices.Contains(got, "x-api-key") {
		t.Errorf("Check(own API) headers_to_remove = %v, want the credentials kept", got)
	}
	// A path that only decodes into the own API is not it: the credential
	// is removed, and two are refused.
	sneaky := "/api/v1/auth/%6de"
	resp = ts.check(t, sneaky, map[string]string{"authorization": "Bearer " + u.Token}, "")
	if got := resp.GetOkResponse().GetHeadersToRemove(); !slices.Contains(got, "authorization") {
		t.Errorf("Check(%s) headers_to_remove = %v, want authorization", sneaky, got)
	}
	resp = ts.check(t, sneaky, map[string]string{"authorization": "Bearer " + u.Token, "x-api-key": key.APIKey}, "")
	if deniedStatus(resp) != 401 {
		t.Errorf("Check(%s with two credentials) = %v, want 401", sneaky, resp)
	}
}
