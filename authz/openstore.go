package authz

import (
	"context"

	"github.com/leakytokens/leaky/authz/pgstore"
	"github.com/leakytokens/leaky/authz/store"
)

// openStore returns the memory store for an empty url, else PostgreSQL
// with the embedded migrations applied.
func openStore(ctx context.Context, url string) (store.Store, error) {
	if url == "" {
		return store.NewMemory(), nil
	}
	s, err := pgstore.Open(ctx, url)
	if err != nil {
		return nil, err
	}
	if err := s.Migrate(ctx); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// Migrate applies the PostgreSQL migrations at url and returns; it is
// `leaky authz migrate`.
func Migrate(ctx context.Context, url string) error {
	s, err := openStore(ctx, url)
	if err != nil {
		return err
	}
	s.Close()
	return nil
}
