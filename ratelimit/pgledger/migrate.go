package pgledger

import (
	"context"
	"embed"
	"fmt"
	"io/fs"
	"slices"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
)

//go:embed migrations/*.sql
var migrations embed.FS

// lockSpace names the advisory locks of a schema's ledger: the first key
// of the two-key form is hashtext of it, so ledgers in two schemas of one
// database never wait for each other.
func (l *Ledger) lockSpace(what string) string { return "leaky-ledger:" + what + ":" + l.schema }

// migrate applies every embedded migration not yet recorded in
// ledger_schema_migrations, in file order (NNNN_name.sql), in one
// transaction that holds an advisory lock for the schema: safe to run
// concurrently and repeatedly; a failure leaves nothing applied.
func (l *Ledger) migrate(ctx context.Context) error {
	names, err := fs.Glob(migrations, "migrations/*.sql")
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	slices.Sort(names)
	return pgx.BeginFunc(ctx, l.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock(hashtext($1), 0)", l.lockSpace("migrate")); err != nil {
			return fmt.Errorf("migrate: lock: %w", err)
		}
		if l.schema != "" {
			if _, err := tx.Exec(ctx, "CREATE SCHEMA IF NOT EXISTS "+pgx.Identifier{l.schema}.Sanitize()); err != nil {
				return fmt.Errorf("migrate: %w", err)
			}
		}
		if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS ledger_schema_migrations (
			version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())`); err != nil {
			return fmt.Errorf("migrate: %w", err)
		}
		for _, name := range names {
			if err := applyOne(ctx, tx, name); err != nil {
				return err
			}
		}
		return nil
	})
}

func applyOne(ctx context.Context, tx pgx.Tx, name string) error {
	base := strings.TrimPrefix(name, "migrations/")
	version, err := strconv.Atoi(strings.SplitN(base, "_", 2)[0])
	if err != nil {
		return fmt.Errorf("migrate: %s: name must start with a number", base)
	}
	var done bool
	if err := tx.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM ledger_schema_migrations WHERE version = $1)", version).Scan(&done); err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	if done {
		return nil
	}
	body, err := migrations.ReadFile(name)
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	if _, err := tx.Exec(ctx, string(body)); err != nil {
		return fmt.Errorf("migrate: %s: %w", base, err)
	}
	if _, err := tx.Exec(ctx, "INSERT INTO ledger_schema_migrations (version, name) VALUES ($1, $2)", version, base); err != nil {
		return fmt.Errorf("migrate: %s: %w", base, err)
	}
	return nil
}
