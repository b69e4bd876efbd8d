package contract_test

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/leakytokens/leaky/internal/contract"
)

// TestWireValues pins the literal names on the wire: Envoy configuration,
// stored bucket state and clients depend on them, so a rename must be a
// deliberate change here. This is the one place outside contract.go that
// writes them.
func TestWireValues(t *testing.T) {
	got := map[string]string{
		"Domain":          contract.Domain,
		"HeaderPrefix":    contract.HeaderPrefix,
		"HeaderUserID":    contract.HeaderUserID,
		"HeaderOrgID":     contract.HeaderOrgID,
		"HeaderTier":      contract.HeaderTier,
		"HeaderProvider":  contract.HeaderProvider,
		"HeaderEstimate":  contract.HeaderEstimate,
		"HeaderRoles":     contract.HeaderRoles,
		"HeaderOrg":       contract.HeaderOrg,
		"HeaderAPIKey":    contract.HeaderAPIKey,
		"KeyProvider":     contract.KeyProvider,
		"KeyTier":         contract.KeyTier,
		"KeyUser":         contract.KeyUser,
		"KeyOrg":          contract.KeyOrg,
		"KeyRequestID":    contract.KeyRequestID,
		"HeaderRequestID": contract.HeaderRequestID,
		"ScopeUser":       string(contract.ScopeUser),
		"ScopeOrg":        string(contract.ScopeOrg),
		"ScopeProvider":   string(contract.ScopeProvider),
	}
	want := map[string]string{
		"Domain":          "leaky-tokens",
		"HeaderPrefix":    "x-leaky-",
		"HeaderUserID":    "x-leaky-user-id",
		"HeaderOrgID":     "x-leaky-org-id",
		"HeaderTier":      "x-leaky-tier",
		"HeaderProvider":  "x-leaky-provider",
		"HeaderEstimate":  "x-leaky-estimate",
		"HeaderRoles":     "x-leaky-roles",
		"HeaderOrg":       "x-leaky-org",
		"HeaderAPIKey":    "x-api-key",
		"KeyProvider":     "provider",
		"KeyTier":         "tier",
		"KeyUser":         "user",
		"KeyOrg":          "org",
		"KeyRequestID":    "request_id",
		"HeaderRequestID": "x-request-id",
		"ScopeUser":       "user",
		"ScopeOrg":        "org",
		"ScopeProvider":   "provider",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("wire values (-want +got):\n%s", diff)
	}
	for _, h := range []string{contract.HeaderUserID, contract.HeaderOrgID, contract.HeaderTier,
		contract.HeaderProvider, contract.HeaderEstimate, contract.HeaderRoles, contract.HeaderOrg} {
		if !strings.HasPrefix(h, contract.HeaderPrefix) || strings.ToLower(h) != h {
			t.Errorf("%q: every contract header is lower-case under %q", h, contract.HeaderPrefix)
		}
	}
}

func e(kv ...string) []contract.Entry {
	out := make([]contract.Entry, 0, len(kv)/2)
	for i := 0; i+1 < len(kv); i += 2 {
		out = append(out, contract.Entry{Key: kv[i], Value: kv[i+1]})
	}
	return out
}

func TestParseDescriptor(t *testing.T) {
	const p, ti, u, o = contract.KeyProvider, contract.KeyTier, contract.KeyUser, contract.KeyOrg
	user := contract.Descriptor{Scope: contract.ScopeUser, Provider: "openai", Tier: "free", User: "alice"}
	org := contract.Descriptor{Scope: contract.ScopeOrg, Provider: "openai", Org: "acme"}
	prov := contract.Descriptor{Scope: contract.ScopeProvider, Provider: "openai"}
	tests := []struct {
		name    string
		entries []contract.Entry
		want    contract.Descriptor
		ok      bool
	}{
		{"user", e(p, "openai", ti, "free", u, "alice"), user, true},
		{"user, any order", e(u, "alice", p, "openai", ti, "free"), user, true},
		{"user, empty tier", e(p, "openai", ti, "", u, "alice"), contract.Descriptor{Scope: contract.ScopeUser, Provider: "openai", User: "alice"}, true},
		{"org", e(p, "openai", o, "acme"), org, true},
		{"org, any order", e(o, "acme", p, "openai"), org, true},
		{"provider", e(p, "openai"), prov, true},
		{"no entries", nil, contract.Descriptor{}, false},
		{"no provider", e(ti, "free", u, "alice"), contract.Descriptor{}, false},
		{"empty provider", e(p, ""), contract.Descriptor{}, false},
		{"provider twice", e(p, "openai", p, "openai"), contract.Descriptor{}, false},
		{"unknown key", e(p, "openai", "colour", "blue"), contract.Descriptor{}, false},
		{"user without tier", e(p, "openai", u, "alice"), contract.Descriptor{}, false},
		{"tier without user", e(p, "openai", ti, "free"), contract.Descriptor{}, false},
		{"empty user", e(p, "openai", ti, "free", u, ""), contract.Descriptor{}, false},
		{"user twice", e(p, "openai", ti, "free", u, "a", u, "b"), contract.Descriptor{}, false},
		{"tier twice", e(p, "openai", ti, "free", ti, "pro", u, "a"), contract.Descriptor{}, false},
		{"user and org", e(p, "openai", ti, "free", u, "alice", o, "acme"), contract.Descriptor{}, false},
		{"org and tier", e(p, "openai", ti, "free", o, "acme"), contract.Descriptor{}, false},
		{"empty org", e(p, "openai", o, ""), contract.Descriptor{}, false},
		{"org twice", e(p, "openai", o, "a", o, "b"), contract.Descriptor{}, false},
		{"keys are case-sensitive", e("Provider", "openai"), contract.Descriptor{}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := contract.ParseDescriptor(tt.entries)
			if ok != tt.ok || got != tt.want {
				t.Errorf("ParseDescriptor(%v) = %+v, %v; want %+v, %v", tt.entries, got, ok, tt.want, tt.ok)
			}
		})
	}
}

// TestKey pins the bucket-key scheme: stored bucket state (Redis) is keyed
// by it, so a change would silently reset every bucket.
func TestKey(t *testing.T) {
	long := strings.Repeat("x", 65)
	tests := []struct {
		d    contract.Descriptor
		want string
	}{
		{contract.Descriptor{Scope: contract.ScopeUser, Provider: "openai", Tier: "free", User: "alice"}, "u:openai:alice"},
		{contract.Descriptor{Scope: contract.ScopeUser, Provider: "openai", Tier: "pro", User: "alice"}, "u:openai:alice"},
		{contract.Descriptor{Scope: contract.ScopeOrg, Provider: "qwen", Org: "acme"}, "o:qwen:acme"},
		{contract.Descriptor{Scope: contract.ScopeProvider, Provider: "gemini"}, "p:gemini"},
		{contract.Descriptor{Scope: contract.ScopeUser, Provider: "openai", User: "a:b"}, "u:openai:#Z4OjHqv2jMwGYPk1wIJigg"},
		{contract.Descriptor{Scope: contract.ScopeUser, Provider: "openai", User: long}, "u:openai:#lTfF_fEgSC99WNJentWD9Q"},
		{contract.Descriptor{Scope: contract.ScopeOrg, Provider: "org=1", Org: strings.Repeat("y", 64)}, "o:#4TMk6T-8y64sXnAx2QyIqw:" + strings.Repeat("y", 64)},
		{contract.Descriptor{Provider: "openai"}, ""},
	}
	for _, tt := range tests {
		if got := tt.d.Key(); got != tt.want {
			t.Errorf("%+v.Key() = %q, want %q", tt.d, got, tt.want)
		}
	}
	// A hashed part never equals a plain one, and distinct values hash apart.
	if contract.KeyPart("a#b") == contract.KeyPart("a=b") || !strings.HasPrefix(contract.KeyPart("a#b"), "#") {
		t.Errorf("KeyPart: hashed parts must differ and start with '#'")
	}
}

func TestRequestDescriptors(t *testing.T) {
	const p, ti, u, o = contract.KeyProvider, contract.KeyTier, contract.KeyUser, contract.KeyOrg
	tests := []struct {
		name string
		r    contract.Request
		want [][]contract.Entry
	}{
		{"user and provider", contract.Request{Provider: "openai", Tier: "free", User: "alice", Estimate: 100},
			[][]contract.Entry{e(p, "openai", ti, "free", u, "alice"), e(p, "openai")}},
		{"with an org", contract.Request{Provider: "qwen", Tier: "pro", User: "bob", Org: "acme"},
			[][]contract.Entry{e(p, "qwen", ti, "pro", u, "bob"), e(p, "qwen", o, "acme"), e(p, "qwen")}},
		{"no provider", contract.Request{Tier: "free", User: "alice", Org: "acme"}, nil},
		{"no tier header", contract.Request{Provider: "openai", User: "alice"}, [][]contract.Entry{e(p, "openai")}},
		{"no user header", contract.Request{Provider: "openai", Tier: "free", Org: "acme"},
			[][]contract.Entry{e(p, "openai", o, "acme"), e(p, "openai")}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := tt.r.Descriptors()
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Fatalf("Descriptors (-want +got):\n%s", diff)
			}
			// Every descriptor built parses, one per scope, in order.
			scopes := []contract.Scope{contract.ScopeUser, contract.ScopeOrg, contract.ScopeProvider}
			for _, es := range got {
				d, ok := contract.ParseDescriptor(es)
				if !ok {
					t.Fatalf("descriptor %v does not parse", es)
				}
				for len(scopes) > 0 && scopes[0] != d.Scope {
					scopes = scopes[1:]
				}
				if len(scopes) == 0 {
					t.Fatalf("descriptor %v: scope %q out of order", es, d.Scope)
				}
				scopes = scopes[1:]
			}
		})
	}
}

func TestFromHeaders(t *testing.T) {
	h := map[string]string{
		contract.HeaderProvider: "openai", contract.HeaderTier: "free", contract.HeaderUserID: "alice",
		contract.HeaderOrgID: "acme", contract.HeaderEstimate: "106", contract.HeaderRoles: "USER",
		contract.HeaderOrg: "ignored-here",
	}
	get := func(m map[string]string) func(string) string { return func(k string) string { return m[k] } }
	got, err := contract.FromHeaders(get(h))
	want := contract.Request{Provider: "openai", Tier: "free", User: "alice", Org: "acme", Estimate: 106}
	if err != nil || got != want {
		t.Fatalf("FromHeaders = %+v, %v; want %+v", got, err, want)
	}
	if got.Hits() != 106 {
		t.Errorf("Hits = %d, want 106", got.Hits())
	}
	got, err = contract.FromHeaders(get(map[string]string{contract.HeaderProvider: "qwen"}))
	if err != nil || got != (contract.Request{Provider: "qwen"}) || got.Hits() != 1 {
		t.Errorf("no estimate: %+v (hits %d), %v; want provider only, hits 1", got, got.Hits(), err)
	}
	for _, bad := range []string{"-1", "1.5", "ten", "9223372036854775808", " 5"} {
		if _, err := contract.FromHeaders(get(map[string]string{contract.HeaderEstimate: bad})); err == nil {
			t.Errorf("estimate %q: want an error", bad)
		}
	}
}

func TestQuotaKeys(t *testing.T) {
	for _, tc := range []struct{ got, want string }{
		{contract.QuotaKey(contract.ScopeUser, "u1", "openai", 1764374400), "u:openai:u1:1764374400"},
		{contract.QuotaKey(contract.ScopeOrg, "o1", "gemini", 0), "o:gemini:o1:0"},
		{contract.PurchasedKey(contract.ScopeUser, "u1", "openai"), "u:openai:u1"},
		{contract.PurchasedKey(contract.ScopeOrg, "a:b", "qwen"), "o:qwen:" + contract.KeyPart("a:b")},
	} {
		if tc.got != tc.want {
			t.Errorf("key = %q, want %q", tc.got, tc.want)
		}
	}
}

func TestValidOrgID(t *testing.T) {
	for id, want := range map[string]bool{
		"acme": true, "a1": true, "0-team": true, strings.Repeat("a", 63): true,
		"": false, "a": false, "-acme": false, "Acme": false, "ac_me": false, strings.Repeat("a", 64): false,
	} {
		if got := contract.ValidOrgID(id); got != want {
			t.Errorf("ValidOrgID(%q) = %v, want %v", id, got, want)
		}
	}
}
