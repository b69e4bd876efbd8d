package main

import (
	"bytes"
	"context"
	"io"
	"log/slog"
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
