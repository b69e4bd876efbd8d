package pgstore

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/leakytokens/leaky/authz/store"
)

// CreateClient locks the owner's row (FOR NO KEY UPDATE, which other
// creations for the same owner wait on, but foreign-key checks do not)
// before it counts the owner's clients, so the count each creation reads
// includes every one committed before it.
func (s *Store) CreateClient(ctx context.Context, c store.Client, maxPerOwner int) error {
	var org *string
	if c.OrgID != "" {
		org = &c.OrgID
	}
	return mapErr("create client", pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var owned int
		err := tx.QueryRow(ctx, "SELECT id FROM users WHERE id = $1 FOR NO KEY UPDATE", c.OwnerID).Scan(new(string))
		if err != nil {
			return err // no rows: the owner is missing
		}
		if err := tx.QueryRow(ctx, "SELECT count(*) FROM oauth_clients WHERE owner_id = $1", c.OwnerID).Scan(&owned); err != nil {
			return err
		}
		if owned >= maxPerOwner {
			return fmt.Errorf("clients of %s: %w", c.OwnerID, store.ErrLimit)
		}
		_, err = tx.Exec(ctx, `INSERT INTO oauth_clients (id, secret_digest, owner_id, org_id, roles, created_at)
			VALUES ($1, $2, $3, $4, $5, $6)`, c.ID, c.SecretDigest, c.OwnerID, org, store.NormRoles(c.Roles), c.CreatedAt)
		return err
	}))
}

func (s *Store) Client(ctx context.Context, id string) (store.Client, error) {
	var c store.Client
	var org *string
	err := s.pool.QueryRow(ctx, `SELECT id, secret_digest, owner_id, org_id, roles, created_at
		FROM oauth_clients WHERE id = $1`, id).Scan(&c.ID, &c.SecretDigest, &c.OwnerID, &org, &c.Roles, &c.CreatedAt)
	if org != nil {
		c.OrgID = *org
	}
	c.CreatedAt = c.CreatedAt.UTC()
	return c, mapErr("client", err)
}

func (s *Store) CreateSigningKey(ctx context.Context, k store.SigningKey) error {
	_, err := s.pool.Exec(ctx, "INSERT INTO signing_keys (kid, sealed, created_at) VALUES ($1, $2, $3)", k.KID, k.Sealed, k.CreatedAt)
	return mapErr("create signing key", err)
}

func (s *Store) SigningKeys(ctx context.Context) ([]store.SigningKey, error) {
	rows, err := s.pool.Query(ctx, "SELECT kid, sealed, created_at FROM signing_keys ORDER BY created_at, kid")
	if err != nil {
		return nil, mapErr("signing keys", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (store.SigningKey, error) {
		var k store.SigningKey
		err := r.Scan(&k.KID, &k.Sealed, &k.CreatedAt)
		k.CreatedAt = k.CreatedAt.UTC()
		return k, err
	})
	return out, mapErr("signing keys", err)
}

func (s *Store) CreateToken(ctx context.Context, t store.TokenSession) error {
	_, err := s.pool.Exec(ctx, `INSERT INTO oauth_tokens (kind, signature, request_id, active, data, expires_at)
		VALUES ($1, $2, $3, $4, $5, $6)`, string(t.Kind), t.Signature, t.RequestID, t.Active, t.Data, t.ExpiresAt)
	return mapErr("create token", err)
}

func (s *Store) Token(ctx context.Context, kind store.TokenKind, signature string) (store.TokenSession, error) {
	t := store.TokenSession{Kind: kind, Signature: signature}
	var exp time.Time
	err := s.pool.QueryRow(ctx, `SELECT request_id, active, data, expires_at FROM oauth_tokens
		WHERE kind = $1 AND signature = $2`, string(kind), signature).Scan(&t.RequestID, &t.Active, &t.Data, &exp)
	t.ExpiresAt = exp.UTC()
	return t, mapErr("token", err)
}

func (s *Store) DeleteToken(ctx context.Context, kind store.TokenKind, signature string) error {
	_, err := s.pool.Exec(ctx, "DELETE FROM oauth_tokens WHERE kind = $1 AND signature = $2", string(kind), signature)
	return mapErr("delete token", err)
}

func (s *Store) DeactivateTokens(ctx context.Context, kind store.TokenKind, requestID string) error {
	_, err := s.pool.Exec(ctx, "UPDATE oauth_tokens SET active = false WHERE kind = $1 AND request_id = $2", string(kind), requestID)
	return mapErr("deactivate tokens", err)
}

func (s *Store) ConsumeToken(ctx context.Context, kind store.TokenKind, signature string) error {
	tag, err := s.pool.Exec(ctx, `UPDATE oauth_tokens SET active = false
		WHERE kind = $1 AND signature = $2 AND active`, string(kind), signature)
	if err != nil {
		return mapErr("consume token", err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("consume token: %w", store.ErrNotFound)
	}
	return nil
}

func (s *Store) PurgeTokens(ctx context.Context, before time.Time) (int64, error) {
	tag, err := s.pool.Exec(ctx, "DELETE FROM oauth_tokens WHERE expires_at < $1", before)
	if err != nil {
		return 0, mapErr("purge tokens", err)
	}
	return tag.RowsAffected(), nil
}
