// Package pgledger is the PostgreSQL implementation of ledger.Ledger
// through a pgx v5 pool: usage, quota charges, purchase sagas, their
// credits and the transactional outbox, in tables its embedded migrations
// create when it opens. Every write is one transaction with its events;
// every query honours its context.
package pgledger

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/leakytokens/leaky/ratelimit/ledger"
)

// Options configure a Ledger; the zero value is the default.
type Options struct {
	// Schema holds the tables (created if absent); "" uses the connection's
	// search_path (normally public). Lower-case letters, digits and _, at
	// most 63 bytes. Tests give each test a schema of its own.
	Schema string
	// MaxConns bounds the pool (default 10). A relay holds one connection
	// for as long as its publish runs.
	MaxConns int32
	// Now is the clock that stamps sagas and published events (default
	// time.Now).
	Now func() time.Time
}

// Ledger is a ledger.Ledger on PostgreSQL. Safe for concurrent use, by
// several processes at once.
type Ledger struct {
	pool   *pgxpool.Pool
	schema string
	now    func() time.Time
}

var _ ledger.Ledger = (*Ledger)(nil)

var schemaName = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,62}$`)

// Open connects to the database at dsn, waits until it answers (retrying a
// server still starting until ctx ends) and applies the migrations. Errors
// never include the DSN, which may carry a password.
func Open(ctx context.Context, dsn string, o Options) (*Ledger, error) {
	if o.Schema != "" && !schemaName.MatchString(o.Schema) {
		return nil, fmt.Errorf("pgledger: schema %q: want lower-case letters, digits and _, at most 63", o.Schema)
	}
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, errors.New("pgledger: cannot parse the database URL")
	}
	cfg.ConnConfig.ConnectTimeout = 2 * time.Second
	cfg.MaxConns = cmpOr(o.MaxConns, 10)
	if o.Schema != "" {
		cfg.ConnConfig.RuntimeParams["search_path"] = o.Schema
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("pgledger: %w", err)
	}
	l := &Ledger{pool: pool, schema: o.Schema, now: o.Now}
	for wait := 50 * time.Millisecond; ; wait = min(2*wait, time.Second) {
		err := pool.Ping(ctx)
		if err == nil {
			break
		}
		select {
		case <-ctx.Done():
			pool.Close()
			return nil, fmt.Errorf("pgledger: %w", err)
		case <-time.After(wait):
		}
	}
	if err := l.migrate(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("pgledger: %w", err)
	}
	return l, nil
}

func cmpOr(v, def int32) int32 {
	if v > 0 {
		return v
	}
	return def
}

// Close closes the pool.
func (l *Ledger) Close() { l.pool.Close() }

// Ping checks the server answers.
func (l *Ledger) Ping(ctx context.Context) error { return l.pool.Ping(ctx) }

// mapErr turns unique violations into ledger.ErrConflict, data exceptions
// (SQLSTATE class 22) and check violations into ledger.ErrInvalid, and
// wraps everything with what.
func mapErr(what string, err error) error {
	var pg *pgconn.PgError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &pg) && pg.Code == "23505":
		return fmt.Errorf("%s: %w (%s)", what, ledger.ErrConflict, pg.ConstraintName)
	case errors.As(err, &pg) && (strings.HasPrefix(pg.Code, "22") || pg.Code == "23514"):
		return fmt.Errorf("%s: %w: %s", what, ledger.ErrInvalid, pg.Message)
	}
	return fmt.Errorf("postgres: %s: %w", what, err)
}

// stamp is t in UTC at microsecond precision, what PostgreSQL keeps.
func stamp(t time.Time) time.Time { return t.UTC().Truncate(time.Microsecond) }

// nullable is nil for "", else s.
func nullable(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}
