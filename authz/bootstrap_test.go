package authz

import (
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/leakytokens/leaky/authz/store"
)

// The bootstrap admin is created when missing and never granted to an
// existing account: not to a user who registered the name first, and not
// back to an admin whose role was revoked.
func TestBootstrapAdminNeverGrants(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name  string
		setup func(t *testing.T, st store.Store) string // returns the user id to inspect
	}{
		{"name registered by a user", func(t *testing.T, st store.Store) string {
			ts := startService(t, st, func(c *Config) { c.AdminUsername = "" })
			return ts.register(t, "admin").UserID
		}},
		{"revoked admin", func(t *testing.T, st store.Store) string {
			ts := startService(t, st, nil)
			u, err := st.UserByUsername(ctx, "admin")
			if err != nil {
				t.Fatal(err)
			}
			if code := ts.call(t, "DELETE", "/api/v1/auth/users/"+u.ID+"/roles/ADMIN", ts.adminToken(t), nil, nil); code != 200 {
				t.Fatalf("revoke ADMIN = %d, want 200", code)
			}
			return u.ID
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := store.NewMemory()
			id := tt.setup(t, st)
			restarted := startService(t, st, nil) // a restart with AdminUsername "admin"
			u, err := st.UserByID(ctx, id)
			if err != nil {
				t.Fatal(err)
			}
			if slices.Contains(u.Roles, store.RoleAdmin) {
				t.Errorf("roles of %q after restart = %v, want no ADMIN", u.Username, u.Roles)
			}
			if got := restarted.Admin().Password; got != "" {
				t.Error("restart with an existing admin account reported a password")
			}
		})
	}
}

// When the admin cannot be created (its email is taken) no password is
// reported, since no account has it, and a warning names the problem.
func TestBootstrapAdminConflict(t *testing.T) {
	st := store.NewMemory()
	first := startService(t, st, func(c *Config) { c.AdminUsername = "" })
	first.register(t, "someone") // email someone@example.com
	ts := startService(t, st, func(c *Config) {
		c.AdminUsername, c.AdminPassword, c.AdminEmail = "root", "", "someone@example.com"
	})
	if _, err := st.UserByUsername(context.Background(), "root"); err == nil {
		t.Fatal("bootstrap admin created despite the email conflict")
	}
	if ts.Admin().Password != "" {
		t.Error("Admin().Password is set after a conflict, want empty (no such account)")
	}
	logs := ts.logs.String()
	if !strings.Contains(logs, `"level":"WARN"`) || !strings.Contains(logs, "bootstrap admin not created") {
		t.Errorf("logs = %s, want a warning that the bootstrap admin was not created", logs)
	}
	if strings.Contains(logs, "bootstrap admin created") {
		t.Errorf("logs claim the bootstrap admin was created: %s", logs)
	}
}
