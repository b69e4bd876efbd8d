package pgstore

import (
	"context"
	"errors"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/leakytokens/leaky/authz/store"
	"github.com/leakytokens/leaky/authz/storetest"
	"github.com/leakytokens/leaky/internal/testenv"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

// open returns a migrated store on a fresh database, closed at cleanup.
func open(t *testing.T) *Store {
	t.Helper()
	url := testenv.PostgresURL(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := Open(ctx, url)
	if err != nil {
		t.Fatalf("Open() = %v", err)
	}
	t.Cleanup(s.Close)
	if err := s.Migrate(ctx); err != nil {
		t.Fatalf("Migrate() = %v", err)
	}
	return s
}

func TestContract(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store { return open(t) })
}

func TestMigrateTwiceAndConcurrently(t *testing.T) {
	s := open(t)
	ctx := context.Background()
	errs := make(chan error, 3)
	for range 3 {
		go func() { errs <- s.Migrate(ctx) }()
	}
	for range 3 {
		if err := <-errs; err != nil {
			t.Errorf("Migrate() again = %v, want nil", err)
		}
	}
	var n int
	if err := s.pool.QueryRow(ctx, "SELECT count(*) FROM authz_schema_migrations").Scan(&n); err != nil || n != 1 {
		t.Errorf("recorded migrations = %d, %v, want 1", n, err)
	}
}

func TestOpenBadURLHidesIt(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	_, err := Open(ctx, "postgres://user:hunter2@127.0.0.1:1/db?connect_timeout=1")
	if err == nil {
		t.Fatal("Open(unreachable) = nil, want an error")
	}
	if got := err.Error(); contains(got, "hunter2") {
		t.Errorf("Open error %q contains the password", got)
	}
}

func contains(s, sub string) bool {
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i:i+len(sub)] == sub {
			return true
		}
	}
	return false
}

// TestMapErrInvalidAndUnavailable: text PostgreSQL refuses (NUL, bytes
// that are not UTF-8) is store.ErrInvalid, in writes and in lookups, and a
// server that does not answer in time is store.ErrUnavailable.
func TestMapErrInvalidAndUnavailable(t *testing.T) {
	s := open(t)
	ctx := context.Background()
	now := time.Now().UTC().Truncate(time.Microsecond)
	for name, err := range map[string]error{
		"create user with NUL":   s.CreateUser(ctx, store.User{ID: "u1", Username: "a\x00b", Email: "a@example.com", PasswordHash: "h", CreatedAt: now}),
		"create org not UTF-8":   s.CreateOrg(ctx, store.Org{ID: "o1", Name: "\xff", CreatedAt: now}, "u1"),
		"user by name with NUL":  func() error { _, err := s.UserByUsername(ctx, "a\x00"); return err }(),
		"organisation not UTF-8": func() error { _, err := s.Org(ctx, "\xff"); return err }(),
	} {
		if !errors.Is(err, store.ErrInvalid) {
			t.Errorf("%s = %v, want store.ErrInvalid", name, err)
		}
	}
	expired, cancel := context.WithDeadline(ctx, time.Now().Add(-time.Second))
	defer cancel()
	if _, err := s.UserByID(expired, "u1"); !errors.Is(err, store.ErrUnavailable) {
		t.Errorf("UserByID past its deadline = %v, want store.ErrUnavailable", err)
	}
}

// TestMapErrRetryable: errors that a retry may get past — a serialization
// failure, a deadlock, a write on a replica after a failover, a closed
// pool — are store.ErrUnavailable (503), not a 500.
func TestMapErrRetryable(t *testing.T) {
	for _, code := range []string{"40001", "40P01", "40003", "25006", "57P01", "08006", "53300"} {
		err := mapErr("x", fmt.Errorf("tx: %w", &pgconn.PgError{Code: code}))
		if !errors.Is(err, store.ErrUnavailable) {
			t.Errorf("mapErr(SQLSTATE %s) = %v, want store.ErrUnavailable", code, err)
		}
	}
	for _, code := range []string{"42601", "40002", "25P02"} {
		if err := mapErr("x", &pgconn.PgError{Code: code}); errors.Is(err, store.ErrUnavailable) {
			t.Errorf("mapErr(SQLSTATE %s) = %v, want not store.ErrUnavailable", code, err)
		}
	}
	s := open(t)
	s.Close()
	if _, err := s.UserByID(context.Background(), "u1"); !errors.Is(err, store.ErrUnavailable) {
		t.Errorf("UserByID on a closed pool = %v, want store.ErrUnavailable", err)
	}
}
