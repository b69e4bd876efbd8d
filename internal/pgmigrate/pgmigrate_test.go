package pgmigrate_test

import (
	"context"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/jackc/pgx/v5"

	"github.com/leakytokens/leaky/internal/pgmigrate"
	"github.com/leakytokens/leaky/internal/testenv"
)

func apply(ctx context.Context, conn *pgx.Conn, fsys fstest.MapFS) error {
	return pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		if err := pgmigrate.Lock(ctx, tx, "pgmigrate-test"); err != nil {
			return err
		}
		return pgmigrate.Apply(ctx, tx, fsys, "m/*.sql", "test_migrations")
	})
}

// Migrations apply in file order, once each; a failing one leaves nothing
// of its run applied; a name without a number is refused.
func TestApply(t *testing.T) {
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, testenv.PostgresURL(t))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	fsys := fstest.MapFS{
		"m/0002_b.sql": {Data: []byte("INSERT INTO t VALUES (2)")},
		"m/0001_a.sql": {Data: []byte("CREATE TABLE t (v int)")},
	}
	for range 2 {
		if err := apply(ctx, conn, fsys); err != nil {
			t.Fatalf("Apply = %v", err)
		}
	}
	count := func(q string) (n int) {
		t.Helper()
		if err := conn.QueryRow(ctx, q).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	if n := count("SELECT count(*) FROM t"); n != 1 {
		t.Errorf("rows of t = %d, want 1 (each migration once)", n)
	}
	fsys["m/0003_c.sql"] = &fstest.MapFile{Data: []byte("INSERT INTO t VALUES (3)")}
	fsys["m/0004_d.sql"] = &fstest.MapFile{Data: []byte("SELECT nonsense FROM nowhere")}
	if err := apply(ctx, conn, fsys); err == nil || !strings.Contains(err.Error(), "0004_d.sql") {
		t.Fatalf("Apply with a failing migration = %v, want an error naming it", err)
	}
	if n := count("SELECT count(*) FROM t"); n != 1 {
		t.Errorf("rows of t after a failed run = %d, want 1 (nothing of the run applied)", n)
	}
	if n := count("SELECT count(*) FROM test_migrations"); n != 2 {
		t.Errorf("recorded migrations = %d, want 2", n)
	}
	if err := apply(ctx, conn, fstest.MapFS{"m/x_bad.sql": {Data: []byte("SELECT 1")}}); err == nil {
		t.Error("Apply of a migration named without a number = nil, want an error")
	}
}
