// Package pgmigrate applies a service's embedded SQL migrations to
// PostgreSQL: files named NNNN_name.sql, applied in file order, each once,
// recorded in a table of the service's own. Both PostgreSQL adapters
// (authz/pgstore, ratelimit/pgledger) run their schemas through it.
package pgmigrate

import (
	"context"
	"fmt"
	"io/fs"
	"path"
	"slices"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
)

// Apply applies, in tx, every migration of fsys matching pattern (e.g.
// "migrations/*.sql") not yet recorded in table, in file order, recording
// each; table (a plain identifier) is created when absent. The caller
// owns the transaction and holds the lock that serialises migrations
// (Lock): a failure rolls back with it, leaving nothing applied.
func Apply(ctx context.Context, tx pgx.Tx, fsys fs.FS, pattern, table string) error {
	names, err := fs.Glob(fsys, pattern)
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	slices.Sort(names)
	ident := pgx.Identifier{table}.Sanitize()
	if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS `+ident+` (
		version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())`); err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	for _, name := range names {
		if err := applyOne(ctx, tx, fsys, name, ident); err != nil {
			return err
		}
	}
	return nil
}

// Lock takes the transaction advisory lock named key (the two-key form,
// hashtext(key) and 0), released when tx ends: migrations under one key
// never run at once, under two keys never wait for each other.
func Lock(ctx context.Context, tx pgx.Tx, key string) error {
	if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock(hashtext($1), 0)", key); err != nil {
		return fmt.Errorf("migrate: lock: %w", err)
	}
	return nil
}

func applyOne(ctx context.Context, tx pgx.Tx, fsys fs.FS, name, table string) error {
	base := path.Base(name)
	version, err := strconv.Atoi(strings.SplitN(base, "_", 2)[0])
	if err != nil {
		return fmt.Errorf("migrate: %s: name must start with a number", base)
	}
	var done bool
	if err := tx.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM "+table+" WHERE version = $1)", version).Scan(&done); err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	if done {
		return nil
	}
	body, err := fs.ReadFile(fsys, name)
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	if _, err := tx.Exec(ctx, string(body)); err != nil {
		return fmt.Errorf("migrate: %s: %w", base, err)
	}
	if _, err := tx.Exec(ctx, "INSERT INTO "+table+" (version, name) VALUES ($1, $2)", version, base); err != nil {
		return fmt.Errorf("migrate: %s: %w", base, err)
	}
	return nil
}
