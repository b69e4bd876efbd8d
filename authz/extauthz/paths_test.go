package extauthz

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

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
		if got := loose(tt.in); got != tt.want {
			t.Errorf("loose(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestJudge(t *testing.T) {
	public := []string{"/api/v1/auth/login", "/oauth2/", "/.well-known/"}
	admin := []string{"/api/v1/admin/"}
	tests := []struct {
		path string
		want route
	}{
		{"/api/v1/auth/login", route{public: true, self: true}},
		{"/API/V1/AUTH/LOGIN", route{}},
		{"/api/v1/auth/login;x", route{}},
		{"/api/v1/auth/me", route{self: true}},
		{"/.well-known/jwks.json", route{public: true}},
		{"/oauth2/%2e%2e/api/v1/admin/x", route{admin: true}},
		{"/api/v1/ADMIN", route{admin: true}},
		{"/openai/v1/chat", route{}},
	}
	for _, tt := range tests {
		if d := cmp.Diff(tt.want, judge(tt.path, public, admin), cmp.AllowUnexported(route{})); d != "" {
			t.Errorf("judge(%q) (-want +got):\n%s", tt.path, d)
		}
	}
	// A path both public and admin is judged admin.
	if got := judge("/api/v1/admin/x", []string{"/api/"}, admin); got.public || !got.admin {
		t.Errorf("judge(public and admin) = %+v, want admin only", got)
	}
}
