package extauthz

import (
	"slices"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"

	"github.com/google/go-cmp/cmp"
)

// TestLoose: the widest single reading (fully decoded, query cut, segments
// stripped, dot-segments resolved) is among the readings.
func TestLoose(t *testing.T) {
	tests := []struct{ in, want string }{
		{"/api/v1/admin/users", "/api/v1/admin/users"},
		{"/API/V1/Admin/Users?x=1", "/api/v1/admin/users"},
		{"/api/v1/admin;x/users", "/api/v1/admin/users"},
		{"/api/v1/admin\\users", "/api/v1/admin/users"},
		{"/api/v1/%2561dmin/users", "/api/v1/admin/users"},
		{"/api/v1/admin%3Bjsessionid=1/users", "/api/v1/admin/users"},
		{"/api/v1/admin%3f/users", "/api/v1/admin"},
		{"/api/v1/admin.%20/users", "/api/v1/admin/users"},
		{"/api/v1/admin%0d%0a/users", "/api/v1/admin/users"},
		{"/api/v1/..%00/admin", "/api/admin"},
		{"/api/v1/x/%2e%2e/admin", "/api/v1/admin"},
		{"//api//v1/./admin/", "/api/v1/admin"},
		{"/api/v1/%zzadmin", "/api/v1/%zzadmin"},
		{"/api/v1/%", "/api/v1/%"},
		{"/a/%2525252525", ""}, // five layers: too deep
	}
	for _, tt := range tests {
		if got := readings(tt.in); !slices.Contains(got, tt.want) {
			t.Errorf("readings(%q) = %q, want it to hold %q", tt.in, got, tt.want)
		}
	}
}

func TestJudge(t *testing.T) {
	public := []string{"/api/v1/auth/login", "/oauth2/", "/.well-known/"}
	admin := []string{"/api/v1/admin/"}
	tests := []struct {
		path string
		want route
		ok   bool
	}{
		{"/api/v1/auth/login", route{public: true, self: true}, true},
		{"/API/V1/AUTH/LOGIN", route{}, true},
		{"/api/v1/auth/login;x", route{}, true},
		{"/api/v1/auth/me", route{self: true}, true},
		{"/.well-known/jwks.json", route{public: true}, true},
		{"/oauth2/../api/v1/admin/x", route{admin: true}, true},
		{"/api/v1/ADMIN", route{admin: true}, true},
		{"/openai/v1/chat", route{}, true},
		{"/api/v1/x%3F/../admin/users", route{admin: true}, true},
		{"/api/v1/admin/../auth/login", route{admin: true}, true},
		{"/oauth2/%2e%2e/api/v1/admin/x", route{}, false},
		{"/api/v1/admin/..;/users", route{}, false},
		{"/api/v1/admin/..%3b/users", route{}, false},
	}
	for _, tt := range tests {
		got, ok := judge(tt.path, public, admin)
		if ok != tt.ok {
			t.Errorf("judge(%q) ok = %v, want %v", tt.path, ok, tt.ok)
		}
		if d := cmp.Diff(tt.want, got, cmp.AllowUnexported(route{})); d != "" {
			t.Errorf("judge(%q) (-want +got):\n%s", tt.path, d)
		}
	}
	// A path both public and admin is judged admin.
	if got, _ := judge("/api/v1/admin/x", []string{"/api/"}, admin); got.public || !got.admin {
		t.Errorf("judge(public and admin) = %+v, want admin only", got)
	}
}

func TestHidesDotSegment(t *testing.T) {
	tests := []struct {
		path string
		want bool
	}{
		{"/api/v1/admin/users", false},
		{"/api/v1/admin/../users", false}, // plain: resolved by every reading alike
		{"/api/v1/./admin", false},
		{"/a/b..c/d", false},
		{"/a/.x/d", false},
		{"/a/x./d", false},
		{"/a/b?..;", false}, // in the query
		{"/a/..;/b", true},
		{"/a/..;x/b", true},
		{"/a/.;/b", true},
		{"/a/..%3b/b", true},
		{"/a/..%20/b", true},
		{"/a/..%00/b", true},
		{"/a/..%09/b", true},
		{"/a/%2e%2e/b", true},
		{"/a/%2E%2e;/b", true},
		{"/a/%2e/b", true},
		{"/a/%252e%252e/b", true},
		{"/a/..%2f/b", true},
		{"/a/x%2f..%2fb", true},
		{"/a/..%5cb", true},
		{"/a/x\\..", true},
		{"/a/..%3fx/b", true},
		{"/a/..%23/b", true},
		{"/a/.../b", true},
		{"/a/. ./b", true},
		{"/a/..", false},
	}
	for _, tt := range tests {
		if got := hidesDotSegment(tt.path); got != tt.want {
			t.Errorf("hidesDotSegment(%q) = %v, want %v", tt.path, got, tt.want)
		}
	}
}

func TestReadings(t *testing.T) {
	tests := []struct{ in, want string }{
		{"/api/v1/admin;x/users", "/api/v1/admin;x/users"},   // kept whole
		{"/api/v1/admin;x/users", "/api/v1/admin/users"},     // parameters dropped
		{"/api/v1/x%3F/../admin", "/api/v1/admin"},           // decoded '?' kept as path
		{"/api/v1/x%3F/../admin", "/api/v1/x"},               // or cut there
		{"/api/v1/x%3F/../admin", "/api/v1/x%3f/../admin"},   // not decoded, not resolved
		{"/api/v1/admin/../users", "/api/v1/admin/../users"}, // not resolved
		{"/api/v1/admin/../users", "/api/v1/users"},
		{"/A/%2561", "/a/%61"}, // one layer
		{"/A/%2561", "/a/a"},   // two
		{"/a/%2525252561", ""}, // five: too deep
	}
	for _, tt := range tests {
		if got := readings(tt.in); !slices.Contains(got, tt.want) {
			t.Errorf("readings(%q) = %q, want it to hold %q", tt.in, got, tt.want)
		}
	}
}

func TestForgedUnderscoreSpellings(t *testing.T) {
	h := map[string]string{"x_leaky_user_id": "a", "x-leaky_tier": "b", "x_leaky-estimate": "1", "x-leaky-org": "acme",
		"x_leaky_org": "acme", "x-leaky-user-id": "c", "x-leakyfoo": "d", "x_leakyfoo": "d", "content-type": "e"}
	set := []*corev3.HeaderValueOption{header("x-leaky-user-id", "u")}
	want := []string{"x-leaky_tier", "x_leaky-estimate", "x_leaky_org", "x_leaky_user_id"}
	if d := cmp.Diff(want, forged(h, set)); d != "" {
		t.Errorf("forged (-want +got):\n%s", d)
	}
}

// judge's fast path (a path no reading changes) must agree with the
// readings it skips.
func TestJudgeFastPathAgreesWithReadings(t *testing.T) {
	admin := []string{"/api/v1/admin/"}
	for _, p := range []string{
		"/api/v1/admin", "/api/v1/admin/", "/API/V1/Admin/users", "/api/v1/administrators",
		"/api/v1/adminx/y", "/openai/v1/chat/completions", "/", "/api/v1/admin?x=1", "/api/v2/admin",
		"/Api/V1/ADMIN#frag", "/api/v1/auth/login",
	} {
		rt, ok := judge(p, nil, admin)
		slow := slices.ContainsFunc(readings(p), func(r string) bool { return underAnyFold(r, admin) })
		if !ok || rt.admin != slow {
			t.Errorf("judge(%q).admin = %v (ok %v), the readings say %v", p, rt.admin, ok, slow)
		}
	}
}
