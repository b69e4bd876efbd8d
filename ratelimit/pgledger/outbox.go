package pgledger

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/leakytokens/leaky/ratelimit/ledger"
)

// insertEvents adds evs to the outbox in tx; seq orders them.
func insertEvents(ctx context.Context, tx pgx.Tx, evs ...ledger.Event) error {
	for _, e := range evs {
		if _, err := tx.Exec(ctx, `INSERT INTO outbox (id, type, key, schema, occurred_at, payload)
			VALUES ($1, $2, $3, $4, $5, $6)`, e.ID, e.Type, e.Key, e.Schema, stamp(e.OccurredAt), string(e.Payload)); err != nil {
			return err
		}
	}
	return nil
}

// Relay implements ledger.Outbox in one transaction. It first takes a
// transaction-scoped advisory lock on the keys of the oldest unpublished
// events it can (a key another relay holds is skipped), then, in a
// statement whose snapshot is younger than those locks, claims up to n
// unpublished events of those keys in seq order with FOR UPDATE SKIP
// LOCKED. So while one relay holds events of a key no other relay claims
// later ones, and each key's events are published in order (taking the
// lock row by row would not do: a key released in the middle of a scan
// lets a later event through while an earlier one was passed over).
// An event whose transaction committed after later ones (seq is assigned
// at insert, not at commit) stays unpublished until a relay sees it:
// nothing is skipped. When publish fails or the commit does (the context
// ended after publish sent them), nothing is marked and the next relay
// publishes the events again: at least once.
func (l *Ledger) Relay(ctx context.Context, n int, publish func(context.Context, []ledger.Event) error) (int, error) {
	if n <= 0 {
		return 0, nil
	}
	tx, err := l.pool.Begin(ctx)
	if err != nil {
		return 0, mapErr("relay", err)
	}
	// Roll back even when ctx has ended, so the locks go at once rather
	// than when the server notices a closed connection.
	defer func() {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = tx.Rollback(rctx) // after a commit: ErrTxClosed
	}()
	evs, err := claim(ctx, tx, l.lockSpace("relay"), n)
	if err != nil || len(evs) == 0 {
		return 0, mapErr("relay", err)
	}
	if err := publish(ctx, evs); err != nil {
		return 0, fmt.Errorf("relay: publish %d events: %w", len(evs), err)
	}
	ids := make([]string, len(evs))
	for i, e := range evs {
		ids[i] = e.ID
	}
	if _, err := tx.Exec(ctx, "UPDATE outbox SET published_at = $1 WHERE id = ANY($2::uuid[])", stamp(l.now()), ids); err != nil {
		return 0, mapErr("relay", err)
	}
	if err := tx.Commit(ctx); err != nil {
		return 0, mapErr("relay", err)
	}
	return len(evs), nil
}

// claim locks the keys, then the rows, as Relay describes.
func claim(ctx context.Context, tx pgx.Tx, space string, n int) ([]ledger.Event, error) {
	rows, err := tx.Query(ctx, `SELECT key FROM outbox
		WHERE published_at IS NULL AND pg_try_advisory_xact_lock(hashtext($1), hashtext(key))
		ORDER BY seq LIMIT $2`, space, n)
	if err != nil {
		return nil, err
	}
	keys, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil || len(keys) == 0 {
		return nil, err
	}
	rows, err = tx.Query(ctx, `SELECT id::text, type, key, schema, occurred_at, payload::text FROM outbox
		WHERE published_at IS NULL AND key = ANY($1)
		ORDER BY seq LIMIT $2 FOR UPDATE SKIP LOCKED`, keys, n)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (ledger.Event, error) {
		var e ledger.Event
		var payload string
		err := r.Scan(&e.ID, &e.Type, &e.Key, &e.Schema, &e.OccurredAt, &payload)
		e.OccurredAt, e.Payload = e.OccurredAt.UTC(), []byte(payload)
		return e, err
	})
}

// Prune implements ledger.Outbox.
func (l *Ledger) Prune(ctx context.Context, before time.Time) (int, error) {
	tag, err := l.pool.Exec(ctx, "DELETE FROM outbox WHERE published_at < $1", before)
	if err != nil {
		return 0, mapErr("prune", err)
	}
	return int(tag.RowsAffected()), nil
}
