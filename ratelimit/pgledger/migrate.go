package pgledger

import (
	"context"
	"embed"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/leakytokens/leaky/internal/pgmigrate"
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
	return pgx.BeginFunc(ctx, l.pool, func(tx pgx.Tx) error {
		if err := pgmigrate.Lock(ctx, tx, l.lockSpace("migrate")); err != nil {
			return err
		}
		if l.schema != "" {
			if _, err := tx.Exec(ctx, "CREATE SCHEMA IF NOT EXISTS "+pgx.Identifier{l.schema}.Sanitize()); err != nil {
				return fmt.Errorf("migrate: %w", err)
			}
		}
		return pgmigrate.Apply(ctx, tx, migrations, "migrations/*.sql", "ledger_schema_migrations")
	})
}
