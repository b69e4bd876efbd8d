package authz

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"

	"github.com/leakytokens/leaky/authz/store"
)

// errClientRevoked: a client_credentials client whose owner is gone, or
// whose organisation its owner no longer administers.
var errClientRevoked = errors.New("the client's owner no longer holds the authority it was created with")

// authority authenticates a REST caller by Bearer JWT and replaces the
// token's roles with the caller's current ones, read from the store under
// the request's deadline. A token keeps the roles it was issued with for
// TokenTTL; role, organisation and key management must not trust them, or a
// revoked ADMIN keeps managing until the token expires. Orgs is left empty:
// organisation decisions read the memberships from the store (orgAdmin).
func (s *Service) authority(r *http.Request) (store.Principal, error) {
	p, err := s.principal(r, false)
	if err != nil {
		return store.Principal{}, err
	}
	cur, err := s.currentPrincipal(r.Context(), p.UserID)
	if errors.Is(err, store.ErrNotFound) || errors.Is(err, errClientRevoked) {
		return store.Principal{}, errUnauthenticated
	}
	return cur, err
}

// currentPrincipal reads subject's current roles: a user's in one lookup,
// else a client's (see clientPrincipal). It fails with store.ErrNotFound
// when subject is neither.
func (s *Service) currentPrincipal(ctx context.Context, subject string) (store.Principal, error) {
	u, err := s.store.UserByID(ctx, subject)
	if err == nil {
		return store.Principal{UserID: u.ID, Roles: u.Roles}, nil
	} else if !errors.Is(err, store.ErrNotFound) {
		return store.Principal{}, err
	}
	c, err := s.store.Client(ctx, subject)
	if err != nil {
		return store.Principal{}, err
	}
	return s.clientPrincipal(ctx, c)
}

// clientPrincipal is what a client_credentials client may act as now, and
// for whom (Owner, OwnerRoles: the owner's current roles): its roles that
// its owner still holds (all of them while the owner is ADMIN,
// as at creation), and its organisation while the owner still administers
// it (or is ADMIN). A missing owner, or an owner who no longer administers
// the organisation, fails with errClientRevoked.
func (s *Service) clientPrincipal(ctx context.Context, c store.Client) (store.Principal, error) {
	owner, err := s.store.UserByID(ctx, c.OwnerID)
	if errors.Is(err, store.ErrNotFound) {
		return store.Principal{}, fmt.Errorf("client %s: owner gone: %w", c.ID, errClientRevoked)
	} else if err != nil {
		return store.Principal{}, err
	}
	ownerAdmin := slices.Contains(owner.Roles, store.RoleAdmin)
	p := store.Principal{UserID: c.ID, Roles: []string{}, Owner: owner.ID, OwnerRoles: owner.Roles}
	for _, role := range c.Roles {
		if ownerAdmin || slices.Contains(owner.Roles, role) {
			p.Roles = append(p.Roles, role)
		}
	}
	if c.OrgID == "" {
		return p, nil
	}
	if !ownerAdmin {
		mems, err := s.store.Members(ctx, c.OrgID)
		if err != nil {
			return store.Principal{}, err
		}
		if !slices.ContainsFunc(mems, func(m store.Member) bool { return m.UserID == owner.ID && m.Admin }) {
			return store.Principal{}, fmt.Errorf("client %s: owner not an admin of %s: %w", c.ID, c.OrgID, errClientRevoked)
		}
	}
	p.Orgs = []string{c.OrgID}
	return p, nil
}
