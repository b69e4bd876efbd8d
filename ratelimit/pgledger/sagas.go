package pgledger

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/leakytokens/leaky/ratelimit/ledger"
)

const sagaColumns = `id::text, user_id, scope, subject, provider, tokens, window_only, window_start,
	coalesce(idempotency_key, ''), status, reason, created_at, updated_at`

func scanSaga(row pgx.Row) (ledger.Saga, error) {
	var s ledger.Saga
	var window *time.Time
	if err := row.Scan(&s.ID, &s.UserID, &s.Pool.Scope, &s.Pool.Subject, &s.Pool.Provider, &s.Tokens,
		&s.WindowOnly, &window, &s.IdempotencyKey, &s.Status, &s.Reason, &s.CreatedAt, &s.UpdatedAt); err != nil {
		return ledger.Saga{}, err
	}
	if window != nil {
		s.Window = window.UTC()
	}
	s.CreatedAt, s.UpdatedAt = s.CreatedAt.UTC(), s.UpdatedAt.UTC()
	return s, nil
}

// StartSaga implements ledger.Sagas. A saga that is not WindowOnly keeps
// no Window; a zero CreatedAt is now.
func (l *Ledger) StartSaga(ctx context.Context, s ledger.Saga, ev ledger.Event) (ledger.Saga, bool, error) {
	if err := s.Validate(); err != nil {
		return ledger.Saga{}, false, fmt.Errorf("start saga: %w", err)
	}
	if err := ev.Validate(); err != nil {
		return ledger.Saga{}, false, fmt.Errorf("start saga: %w", err)
	}
	if s.CreatedAt.IsZero() {
		s.CreatedAt = l.now()
	}
	var window *time.Time
	if s.WindowOnly {
		w := stamp(s.Window)
		window = &w
	}
	var out ledger.Saga
	created := false
	err := pgx.BeginFunc(ctx, l.pool, func(tx pgx.Tx) error {
		saga, err := scanSaga(tx.QueryRow(ctx, `INSERT INTO sagas (id, user_id, scope, subject, provider, tokens,
			window_only, window_start, idempotency_key, status, reason, created_at, updated_at)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'STARTED', '', $10, $10)
			ON CONFLICT (user_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
			RETURNING `+sagaColumns, s.ID, s.UserID, s.Pool.Scope, s.Pool.Subject, s.Pool.Provider, s.Tokens,
			s.WindowOnly, window, nullable(s.IdempotencyKey), stamp(s.CreatedAt)))
		if errors.Is(err, pgx.ErrNoRows) {
			// The key is taken: the saga that took it (committed, since
			// ON CONFLICT waited for it).
			out, err = scanSaga(tx.QueryRow(ctx, "SELECT "+sagaColumns+
				" FROM sagas WHERE user_id = $1 AND idempotency_key = $2", s.UserID, s.IdempotencyKey))
			return err
		}
		if err != nil {
			return err
		}
		out, created = saga, true
		return insertEvents(ctx, tx, ev)
	})
	if err != nil {
		return ledger.Saga{}, false, mapErr("start saga", err)
	}
	return out, created, nil
}

// StepSaga implements ledger.Sagas. A step ledger.ValidStep refuses is
// ErrInvalid. To TOKENS_ALLOCATED it inserts the saga's credit; to FAILED
// it deletes it (the compensation of an allocation), so QuotaState no
// longer counts it. The reason is cut by ledger.TruncateReason.
func (l *Ledger) StepSaga(ctx context.Context, id string, from, to ledger.Status, reason string, evs ...ledger.Event) (ledger.Saga, error) {
	if !ledger.ValidStep(from, to) {
		return ledger.Saga{}, fmt.Errorf("step saga: %s → %s: %w", from, to, ledger.ErrInvalid)
	}
	if err := ledger.ValidateEvents(evs...); err != nil {
		return ledger.Saga{}, fmt.Errorf("step saga: %w", err)
	}
	if _, err := uuid.Parse(id); err != nil {
		return ledger.Saga{}, fmt.Errorf("step saga %q: %w", id, ledger.ErrNotFound)
	}
	var out ledger.Saga
	err := pgx.BeginFunc(ctx, l.pool, func(tx pgx.Tx) error {
		saga, err := scanSaga(tx.QueryRow(ctx, `UPDATE sagas SET status = $3, updated_at = $4,
			reason = CASE WHEN $3 = 'FAILED' THEN $5 ELSE reason END
			WHERE id = $1 AND status = $2 RETURNING `+sagaColumns,
			id, string(from), string(to), stamp(l.now()), ledger.TruncateReason(reason)))
		if errors.Is(err, pgx.ErrNoRows) {
			return l.stepRefused(ctx, tx, id, from)
		}
		if err != nil {
			return err
		}
		out = saga
		switch to {
		case ledger.StatusTokensAllocated:
			_, err = tx.Exec(ctx, `INSERT INTO credits (saga_id, scope, subject, provider, window_start, tokens)
				SELECT id, scope, subject, provider, window_start, tokens FROM sagas WHERE id = $1`, id)
		case ledger.StatusFailed:
			_, err = tx.Exec(ctx, "DELETE FROM credits WHERE saga_id = $1", id)
		}
		if err != nil {
			return err
		}
		return insertEvents(ctx, tx, evs...)
	})
	if err != nil {
		return ledger.Saga{}, mapErr("step saga "+id, err)
	}
	return out, nil
}

// stepRefused says why no saga id in status from was updated.
func (l *Ledger) stepRefused(ctx context.Context, tx pgx.Tx, id string, from ledger.Status) error {
	var status string
	err := tx.QueryRow(ctx, "SELECT status FROM sagas WHERE id = $1", id).Scan(&status)
	if errors.Is(err, pgx.ErrNoRows) {
		return ledger.ErrNotFound
	}
	if err != nil {
		return err
	}
	return fmt.Errorf("status %s, not %s: %w", status, from, ledger.ErrConflict)
}

// Saga implements ledger.Sagas; an id that is not a UUID is ErrNotFound.
func (l *Ledger) Saga(ctx context.Context, id string) (ledger.Saga, error) {
	if _, err := uuid.Parse(id); err != nil {
		return ledger.Saga{}, fmt.Errorf("saga %q: %w", id, ledger.ErrNotFound)
	}
	s, err := scanSaga(l.pool.QueryRow(ctx, "SELECT "+sagaColumns+" FROM sagas WHERE id = $1", id))
	if errors.Is(err, pgx.ErrNoRows) {
		return ledger.Saga{}, fmt.Errorf("saga %s: %w", id, ledger.ErrNotFound)
	}
	return s, mapErr("saga", err)
}

// StaleSagas implements ledger.Sagas; ties in UpdatedAt are ordered by id.
func (l *Ledger) StaleSagas(ctx context.Context, before time.Time, limit int) ([]ledger.Saga, error) {
	rows, err := l.pool.Query(ctx, "SELECT "+sagaColumns+` FROM sagas
		WHERE status IN ('STARTED', 'PAYMENT_RESERVED', 'TOKENS_ALLOCATED') AND updated_at < $1
		ORDER BY updated_at, id LIMIT $2`, before, max(limit, 0))
	if err != nil {
		return nil, mapErr("stale sagas", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (ledger.Saga, error) { return scanSaga(r) })
	return out, mapErr("stale sagas", err)
}
