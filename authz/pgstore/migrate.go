package pgstore

import (
	"context"
	"embed"

	"github.com/jackc/pgx/v5"

	"github.com/leakytokens/leaky/internal/pgmigrate"
)

//go:embed migrations/*.sql
var migrations embed.FS

// migrationLock names the advisory lock that serialises Migrate across
// replicas starting together.
const migrationLock = "leaky-authz:migrate"

// OpenMigrated opens the store at url (as Open) and applies the embedded
// migrations (as Migrate), closing the store again when they fail: what a
// service runs on.
func OpenMigrated(ctx context.Context, url string) (*Store, error) {
	s, err := Open(ctx, url)
	if err != nil {
		return nil, err
	}
	if err := s.Migrate(ctx); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// Migrate applies every embedded migration not yet recorded in
// authz_schema_migrations, in file order (NNNN_name.sql), in one
// transaction holding an advisory lock: safe to run concurrently and
// repeatedly; a failure leaves nothing applied.
func (s *Store) Migrate(ctx context.Context) error {
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if err := pgmigrate.Lock(ctx, tx, migrationLock); err != nil {
			return err
		}
		return pgmigrate.Apply(ctx, tx, migrations, "migrations/*.sql", "authz_schema_migrations")
	})
}
