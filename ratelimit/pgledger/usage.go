package pgledger

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/leakytokens/leaky/ratelimit/ledger"
)

// RecordUsage implements ledger.Recorder: the usage row, its quota
// charges and its event in one transaction; an existing id writes nothing.
func (l *Ledger) RecordUsage(ctx context.Context, u ledger.Usage, ev ledger.Event) (bool, error) {
	if err := u.Validate(); err != nil {
		return false, fmt.Errorf("record usage: %w", err)
	}
	if err := ev.Validate(); err != nil {
		return false, fmt.Errorf("record usage: %w", err)
	}
	var created bool
	err := pgx.BeginFunc(ctx, l.pool, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `INSERT INTO usage (id, kind, user_id, org_id, provider, tier, estimate, actual, settled_at)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (id) DO NOTHING`,
			u.ID, string(u.Kind), u.UserID, nullable(u.OrgID), u.Provider, u.Tier, u.Estimate, u.Actual, stamp(u.At))
		if err != nil || tag.RowsAffected() == 0 {
			return err
		}
		for _, q := range u.Quotas {
			if _, err := tx.Exec(ctx, `INSERT INTO quota_charges
				(usage_id, scope, subject, provider, window_start, from_window, from_purchased)
				VALUES ($1, $2, $3, $4, $5, $6, $7)`,
				u.ID, q.Pool.Scope, q.Pool.Subject, q.Pool.Provider, stamp(q.Window), q.FromWindow, q.FromPurchased); err != nil {
				return err
			}
		}
		created = true
		return insertEvents(ctx, tx, ev)
	})
	if err != nil {
		return false, mapErr("record usage", err)
	}
	return created, nil
}

// QuotaState implements ledger.Quotas: the sums and the pending credits
// in one read-only REPEATABLE READ transaction, so they come from one
// snapshot.
func (l *Ledger) QuotaState(ctx context.Context, p ledger.Pool, window time.Time) (ledger.QuotaState, error) {
	if err := p.Validate(); err != nil {
		return ledger.QuotaState{}, fmt.Errorf("quota state: %w", err)
	}
	var st ledger.QuotaState
	opts := pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}
	err := pgx.BeginTxFunc(ctx, l.pool, opts, func(tx pgx.Tx) error {
		err := tx.QueryRow(ctx, `SELECT
			(SELECT coalesce(sum(from_window), 0) FROM quota_charges
				WHERE scope = $1 AND subject = $2 AND provider = $3 AND window_start = $4)::bigint
			- (SELECT coalesce(sum(tokens), 0) FROM credits
				WHERE scope = $1 AND subject = $2 AND provider = $3 AND window_start = $4)::bigint,
			(SELECT coalesce(sum(tokens), 0) FROM credits
				WHERE scope = $1 AND subject = $2 AND provider = $3 AND window_start IS NULL)::bigint
			- (SELECT coalesce(sum(from_purchased), 0) FROM quota_charges
				WHERE scope = $1 AND subject = $2 AND provider = $3)::bigint`,
			p.Scope, p.Subject, p.Provider, stamp(window)).Scan(&st.Used, &st.Purchased)
		if err != nil {
			return err
		}
		rows, err := tx.Query(ctx, `SELECT c.saga_id::text, c.window_start IS NOT NULL FROM credits c
			JOIN sagas s ON s.id = c.saga_id
			WHERE s.status = 'TOKENS_ALLOCATED' AND c.scope = $1 AND c.subject = $2 AND c.provider = $3
				AND (c.window_start IS NULL OR c.window_start = $4)`, p.Scope, p.Subject, p.Provider, stamp(window))
		if err != nil {
			return err
		}
		var (
			id       string
			inWindow bool
		)
		_, err = pgx.ForEachRow(rows, []any{&id, &inWindow}, func() error {
			if inWindow {
				st.PendingWindow = append(st.PendingWindow, id)
			} else {
				st.Pending = append(st.Pending, id)
			}
			return nil
		})
		return err
	})
	if err != nil {
		return ledger.QuotaState{}, mapErr("quota state", err)
	}
	slices.Sort(st.Pending)
	slices.Sort(st.PendingWindow)
	return st, nil
}
