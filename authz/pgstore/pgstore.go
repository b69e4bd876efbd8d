// Package pgstore is the PostgreSQL implementation of the authz service's
// store.Store, through a pgx v5 pool. Its schema lives in embedded
// migrations that Migrate applies. Every call honours its context's
// deadline, so a slow or stopped server costs a caller at most that.
package pgstore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/puddle/v2"

	"github.com/leakytokens/leaky/authz/store"
)

// Store is a store.Store on PostgreSQL. Safe for concurrent use.
type Store struct {
	pool *pgxpool.Pool
}

var _ store.Store = (*Store)(nil)

// Open connects to the database at url and waits until it answers (a
// server still starting up, or not yet listening, is retried until ctx
// ends). It does not migrate. Errors never include the URL, which may
// carry a password.
func Open(ctx context.Context, url string) (*Store, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, errors.New("postgres: cannot parse the database URL")
	}
	cfg.ConnConfig.ConnectTimeout = 2 * time.Second
	cfg.MinConns = 2
	cfg.HealthCheckPeriod = 5 * time.Second
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("postgres: %w", err)
	}
	for wait := 50 * time.Millisecond; ; wait = min(2*wait, time.Second) {
		err := pool.Ping(ctx)
		if err == nil {
			return &Store{pool: pool}, nil
		}
		select {
		case <-ctx.Done():
			pool.Close()
			return nil, fmt.Errorf("postgres: %w", err)
		case <-time.After(wait):
		}
	}
}

// Ping checks the server answers.
func (s *Store) Ping(ctx context.Context) error { return s.pool.Ping(ctx) }

// Close closes the pool.
func (s *Store) Close() { s.pool.Close() }

// mapErr turns "no rows", unique and foreign-key violations into the store
// errors; data exceptions (SQLSTATE class 22: text with NUL or not UTF-8,
// a value out of range) and check violations into store.ErrInvalid; a
// server that cannot be reached, did not answer in time, or refused for
// a reason a retry may get past (unavailableCode) into
// store.ErrUnavailable. It wraps the rest with what.
func mapErr(what string, err error) error {
	var pg *pgconn.PgError
	switch {
	case err == nil:
		return nil
	case errors.Is(err, pgx.ErrNoRows):
		return fmt.Errorf("%s: %w", what, store.ErrNotFound)
	case errors.As(err, &pg):
		switch {
		case pg.Code == "23505":
			return fmt.Errorf("%s: %w", what, store.ErrConflict)
		case pg.Code == "23503":
			return fmt.Errorf("%s: %w", what, store.ErrNotFound)
		case strings.HasPrefix(pg.Code, "22"), pg.Code == "23514":
			return fmt.Errorf("%s: %w: %s", what, store.ErrInvalid, pg.Code)
		case unavailableCode(pg.Code):
			return fmt.Errorf("postgres: %s: %w: %w", what, store.ErrUnavailable, err)
		}
	case unreachable(err):
		return fmt.Errorf("postgres: %s: %w: %w", what, store.ErrUnavailable, err)
	}
	return fmt.Errorf("postgres: %s: %w", what, err)
}

// unavailableCode reports whether a server error says the server cannot
// serve now, and a retry may succeed: connection exceptions (08),
// insufficient resources (53), operator intervention such as a shutdown
// (57), a serialization failure (40001), a deadlock (40P01), a statement
// whose completion is unknown (40003), and a write on a read-only
// transaction (25006: a replica after a failover).
func unavailableCode(code string) bool {
	switch code {
	case "40001", "40P01", "40003", "25006":
		return true
	}
	return strings.HasPrefix(code, "08") || strings.HasPrefix(code, "53") || strings.HasPrefix(code, "57")
}

// unreachable reports whether err, which the server did not send, is a
// failure to reach it or to hear from it in time, or a closed pool.
func unreachable(err error) bool {
	var connect *pgconn.ConnectError
	var netErr net.Error
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) ||
		pgconn.Timeout(err) || errors.As(err, &connect) || errors.As(err, &netErr) ||
		errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, puddle.ErrClosedPool)
}

func (s *Store) CreateUser(ctx context.Context, u store.User) error {
	return mapErr("create user", pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `INSERT INTO users (id, username, email, password_hash, created_at)
			VALUES ($1, $2, $3, $4, $5)`, u.ID, u.Username, u.Email, u.PasswordHash, u.CreatedAt); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `INSERT INTO user_roles (user_id, role) SELECT $1, unnest($2::text[])
			ON CONFLICT DO NOTHING`, u.ID, store.NormRoles(u.Roles))
		return err
	}))
}

const userQuery = `SELECT u.id, u.username, u.email, u.password_hash, u.created_at,
	coalesce(array_agg(r.role ORDER BY r.role) FILTER (WHERE r.role IS NOT NULL), '{}')
	FROM users u LEFT JOIN user_roles r ON r.user_id = u.id `

func (s *Store) scanUser(ctx context.Context, where string, arg any) (store.User, error) {
	var u store.User
	err := s.pool.QueryRow(ctx, userQuery+where+" GROUP BY u.id", arg).
		Scan(&u.ID, &u.Username, &u.Email, &u.PasswordHash, &u.CreatedAt, &u.Roles)
	u.CreatedAt = u.CreatedAt.UTC()
	return u, mapErr("user", err)
}

func (s *Store) UserByID(ctx context.Context, id string) (store.User, error) {
	return s.scanUser(ctx, "WHERE u.id = $1", id)
}

func (s *Store) UserByUsername(ctx context.Context, username string) (store.User, error) {
	return s.scanUser(ctx, "WHERE lower(u.username) = lower($1)", username)
}

func (s *Store) GrantRole(ctx context.Context, userID, role string) error {
	_, err := s.pool.Exec(ctx, `INSERT INTO user_roles (user_id, role) VALUES ($1, upper($2))
		ON CONFLICT DO NOTHING`, userID, role)
	return mapErr("grant role", err)
}

func (s *Store) RevokeRole(ctx context.Context, userID, role string) error {
	var exists bool
	if err := s.pool.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM users WHERE id = $1)", userID).Scan(&exists); err != nil {
		return mapErr("revoke role", err)
	}
	if !exists {
		return fmt.Errorf("revoke role: user: %w", store.ErrNotFound)
	}
	_, err := s.pool.Exec(ctx, "DELETE FROM user_roles WHERE user_id = $1 AND role = upper($2)", userID, role)
	return mapErr("revoke role", err)
}

func nullTime(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}

func (s *Store) CreateAPIKey(ctx context.Context, k store.APIKey) error {
	_, err := s.pool.Exec(ctx, `INSERT INTO api_keys (id, user_id, name, digest, created_at, expires_at)
		VALUES ($1, $2, $3, $4, $5, $6)`, k.ID, k.UserID, k.Name, k.Digest[:], k.CreatedAt, nullTime(k.ExpiresAt))
	return mapErr("create api key", err)
}

const keyColumns = "id, user_id, name, digest, created_at, expires_at"

func scanKey(row pgx.Row) (store.APIKey, error) {
	var k store.APIKey
	var digest []byte
	var exp *time.Time
	if err := row.Scan(&k.ID, &k.UserID, &k.Name, &digest, &k.CreatedAt, &exp); err != nil {
		return store.APIKey{}, err
	}
	copy(k.Digest[:], digest)
	k.CreatedAt = k.CreatedAt.UTC()
	if exp != nil {
		k.ExpiresAt = exp.UTC()
	}
	return k, nil
}

func (s *Store) APIKeyByID(ctx context.Context, id string) (store.APIKey, error) {
	k, err := scanKey(s.pool.QueryRow(ctx, "SELECT "+keyColumns+" FROM api_keys WHERE id = $1", id))
	return k, mapErr("api key", err)
}

func (s *Store) APIKeys(ctx context.Context, userID string) ([]store.APIKey, error) {
	rows, err := s.pool.Query(ctx, "SELECT "+keyColumns+" FROM api_keys WHERE user_id = $1 ORDER BY created_at, id", userID)
	if err != nil {
		return nil, mapErr("api keys", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (store.APIKey, error) { return scanKey(r) })
	if out == nil {
		out = []store.APIKey{}
	}
	return out, mapErr("api keys", err)
}

func (s *Store) DeleteAPIKey(ctx context.Context, userID, id string) error {
	tag, err := s.pool.Exec(ctx, "DELETE FROM api_keys WHERE id = $1 AND user_id = $2", id, userID)
	if err != nil {
		return mapErr("delete api key", err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("delete api key: %w", store.ErrNotFound)
	}
	return nil
}
