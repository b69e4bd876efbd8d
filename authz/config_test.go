package authz

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestLoadConfig(t *testing.T) {
	env := map[string]string{
		"LEAKY_GRPC_ADDR":         "127.0.0.1:0",
		"LEAKY_API_KEY_CACHE_TTL": "5s",
		"LEAKY_PUBLIC_PATHS":      "/a/, /b/",
		"LEAKY_ADMIN_USERNAME":    "root",
		"LEAKY_ADMIN_PASSWORD":    "from-env-password",
	}
	c, err := LoadConfig(func(k string) string { return env[k] })
	if err != nil {
		t.Fatalf("LoadConfig() = %v", err)
	}
	want := DefaultConfig()
	want.GRPCAddr, want.APIKeyCacheTTL = "127.0.0.1:0", 5*time.Second
	want.PublicPaths = []string{"/a/", "/b/"}
	want.AdminUsername, want.AdminPassword = "root", "from-env-password"
	if d := cmp.Diff(want, c); d != "" {
		t.Errorf("LoadConfig (-want +got):\n%s", d)
	}
}

func TestValidateReportsEveryProblem(t *testing.T) {
	c := DefaultConfig()
	c.DatabaseURL = "postgres://x"   // needs a signing secret
	c.CheckTimeout = time.Second     // above Envoy's budget
	c.StoreFailure = "maybe"         // unknown
	c.AdminPaths = []string{"admin"} // not a path
	c.PublicURL = "auth.example.com" // not absolute
	c.PasswordHashers = -1
	c.PasswordHashQueue = -1
	err := c.Validate()
	if err == nil {
		t.Fatal("Validate() = nil, want errors")
	}
	for _, want := range []string{"signing-secret", "check-timeout", "store-failure", `"admin"`, "public-url", "password-hashers", "password-hash-queue"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Validate() = %q, want it to mention %s", err, want)
		}
	}
	d := DefaultConfig()
	if err := d.Validate(); err != nil {
		t.Errorf("DefaultConfig().Validate() = %v, want nil", err)
	}
}
