package main

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/leakytokens/leaky/authz"
	"github.com/leakytokens/leaky/internal/testenv"
	"github.com/leakytokens/leaky/ratelimit"
)

// `leaky authz migrate` applies the migrations (repeatably) and needs a URL.
func TestAuthzMigrate(t *testing.T) {
	url := testenv.PostgresURL(t)
	for i := range 2 {
		var out bytes.Buffer
		if err := run(context.Background(), []string{"authz", "migrate"}, testEnv(&out, &out, map[string]string{"DATABASE_URL": url})); err != nil {
			t.Fatalf("authz migrate (run %d) = %v\n%s", i+1, err, out.String())
		}
		if !strings.Contains(out.String(), "migrations applied") {
			t.Errorf("authz migrate (run %d) printed %q", i+1, out.String())
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var users bool
	var applied int
	if err := conn.QueryRow(ctx, `SELECT to_regclass('users') IS NOT NULL, (SELECT count(*) FROM authz_schema_migrations)`).Scan(&users, &applied); err != nil {
		t.Fatalf("read the schema: %v", err)
	}
	if !users || applied < 1 {
		t.Errorf("after migrate: users table %v, %d migrations recorded; want the schema", users, applied)
	}

	var out bytes.Buffer
	err = run(context.Background(), []string{"authz", "migrate"}, testEnv(&out, &out, nil))
	if err == nil || !strings.Contains(err.Error(), "-database-url") {
		t.Errorf("authz migrate without a URL = %v, want an error naming -database-url", err)
	}
}

// A configuration error is reported before any store is dialled: the
// addresses below would otherwise fail with a connection error instead.
func TestConfigCheckedBeforeTheStoreOpens(t *testing.T) {
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	rl := ratelimit.DefaultConfig()
	rl.Store, rl.RedisURL, rl.MaxDescriptors = "redis", "redis://127.0.0.1:1/0", 0
	if _, err := newRatelimit(context.Background(), rl, logger); err == nil || !strings.Contains(err.Error(), "max-descriptors") {
		t.Errorf("newRatelimit(bad config) = %v, want the max-descriptors problem", err)
	}
	az := authz.DefaultConfig()
	az.DatabaseURL = "postgres://leaky@127.0.0.1:1/leaky"
	if _, err := newAuthz(context.Background(), az, logger); err == nil || !strings.Contains(err.Error(), "signing-secret: required") {
		t.Errorf("newAuthz(database without secret) = %v, want the signing-secret problem", err)
	}
}

// leaky controlplane refuses a bad configuration, and a policy file that
// fails validation, before it binds anything.
func TestControlplaneRefusesBadConfig(t *testing.T) {
	bad := filepath.Join(t.TempDir(), "policy.yaml")
	if err := os.WriteFile(bad, []byte("domain: leaky-tokens\ntiers: {}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"-listener", "nowhere"}, "listener"},
		{[]string{"-endpoint", "leaky-authz-grpc=127.0.0.1:0"}, "endpoint leaky-authz-grpc"},
		{[]string{"-xds-addr", "127.0.0.1:0", "-http-addr", "127.0.0.1:0", "-policy", bad}, "at least one tier"},
	} {
		var out bytes.Buffer
		err := run(context.Background(), append([]string{"controlplane"}, tt.args...), testEnv(&out, &out, nil))
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("leaky controlplane %v = %v, want an error naming %q", tt.args, err, tt.want)
		}
	}
}

// A configuration the service would refuse is reported before any store is
// opened: the store URLs below lead nowhere, so a check made after the
// store would fail with a dial error instead, and against a real database
// would have applied the migrations first.
func TestConfigFilesCheckedBeforeTheStoreOpens(t *testing.T) {
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	limitsNothing := "domain: leaky-tokens\ndefault_tier: free\ntiers:\n  free: {buckets: {\"*\": {capacity: 10, leak_rate: 1}}}\n"
	tests := []struct {
		name, file, content string
		ratelimit, authz    string // what each error must say beside the file
	}{
		{"policy that limits nothing", "policy.yaml", limitsNothing,
			"providers: at least one provider must be listed by name", "providers: at least one provider must be listed by name"},
		{"policy with a rate the interval cannot hold", "policy.yaml", strings.Replace(limitsNothing, "tiers:", "providers: {openai: {capacity: 10, leak_rate: 700000}}\ntiers:", 1),
			"providers.openai.leak_rate 700000: would run as 1000000 tokens/s", "providers.openai.leak_rate 700000"},
		// The ratelimit service validates envoyproxy/ratelimit files itself;
		// authz needs the policy, which this directory lacks.
		{"envoyproxy/ratelimit file with a bad unit", "rl.yaml", "domain: d\ndescriptors:\n  - key: k\n    rate_limit: {unit: fortnight, requests_per_unit: 1}\n",
			"fortnight", "holds no file with domain leaky-tokens"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, tt.file)
			if err := os.WriteFile(path, []byte(tt.content), 0o644); err != nil {
				t.Fatal(err)
			}
			rl := ratelimit.DefaultConfig()
			rl.Store, rl.RedisURL, rl.ConfigPath = "redis", "redis://127.0.0.1:1/0", dir
			if _, err := newRatelimit(context.Background(), rl, logger); err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), tt.ratelimit) {
				t.Errorf("newRatelimit = %v, want an error naming %s and %q", err, path, tt.ratelimit)
			}
			az := authz.DefaultConfig()
			az.DatabaseURL, az.SigningSecret, az.PolicyPath = "postgres://leaky@127.0.0.1:1/leaky", "0123456789abcdef", dir
			if _, err := newAuthz(context.Background(), az, logger); err == nil || !strings.Contains(err.Error(), dir) || !strings.Contains(err.Error(), tt.authz) {
				t.Errorf("newAuthz = %v, want an error naming %s and %q", err, dir, tt.authz)
			}
		})
	}
}
