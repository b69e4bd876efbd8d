package pgstore

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/leakytokens/leaky/authz/store"
)

func (s *Store) CreateOrg(ctx context.Context, o store.Org, admin string) error {
	return mapErr("create organisation", pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "INSERT INTO orgs (id, name, created_at) VALUES ($1, $2, $3)", o.ID, o.Name, o.CreatedAt); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, "INSERT INTO org_members (org_id, user_id, admin) VALUES ($1, $2, true)", o.ID, admin)
		return err
	}))
}

func (s *Store) Org(ctx context.Context, id string) (store.Org, error) {
	var o store.Org
	err := s.pool.QueryRow(ctx, "SELECT id, name, created_at FROM orgs WHERE id = $1", id).Scan(&o.ID, &o.Name, &o.CreatedAt)
	o.CreatedAt = o.CreatedAt.UTC()
	return o, mapErr("organisation", err)
}

func (s *Store) PutMember(ctx context.Context, m store.Member) error {
	_, err := s.pool.Exec(ctx, `INSERT INTO org_members (org_id, user_id, admin) VALUES ($1, $2, $3)
		ON CONFLICT (org_id, user_id) DO UPDATE SET admin = EXCLUDED.admin`, m.OrgID, m.UserID, m.Admin)
	return mapErr("put member", err)
}

func (s *Store) RemoveMember(ctx context.Context, orgID, userID string) error {
	tag, err := s.pool.Exec(ctx, "DELETE FROM org_members WHERE org_id = $1 AND user_id = $2", orgID, userID)
	if err != nil {
		return mapErr("remove member", err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("remove member: %w", store.ErrNotFound)
	}
	return nil
}

func (s *Store) Members(ctx context.Context, orgID string) ([]store.Member, error) {
	if _, err := s.Org(ctx, orgID); err != nil {
		return nil, err
	}
	rows, err := s.pool.Query(ctx, "SELECT org_id, user_id, admin FROM org_members WHERE org_id = $1 ORDER BY user_id", orgID)
	if err != nil {
		return nil, mapErr("members", err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowToStructByPos[store.Member])
	if out == nil {
		out = []store.Member{}
	}
	return out, mapErr("members", err)
}

func (s *Store) UserOrgs(ctx context.Context, userID string) ([]string, error) {
	rows, err := s.pool.Query(ctx, "SELECT org_id FROM org_members WHERE user_id = $1 ORDER BY org_id", userID)
	if err != nil {
		return nil, mapErr("user organisations", err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if out == nil {
		out = []string{}
	}
	return out, mapErr("user organisations", err)
}
