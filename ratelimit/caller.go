package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strings"

	"github.com/leakytokens/leaky/internal/contract"
	"github.com/leakytokens/leaky/internal/jwks"
)

// roleAdmin is the role that sees and spends every pool.
const roleAdmin = "ADMIN"

// Caller is who calls the token API, as authz says.
type Caller struct {
	UserID string
	Orgs   []string // the organisations the caller belongs to
	Roles  []string
	Tier   string // the policy's tier for the caller ("" = the policy's default)
}

// Admin reports whether the caller holds role ADMIN.
func (c Caller) Admin() bool {
	return slices.ContainsFunc(c.Roles, func(r string) bool { return strings.EqualFold(r, roleAdmin) })
}

// MayUser reports whether the caller may see and spend user id's pools:
// their own, or anyone's for an ADMIN.
func (c Caller) MayUser(id string) bool { return c.Admin() || (id != "" && id == c.UserID) }

// TierFor is the tier user id's pools are charged at: the caller's own
// for their own id; for another user's (an ADMIN acting for them) "", the
// policy's default tier, as the token service does not know their roles.
func (c Caller) TierFor(id string) string {
	if id == c.UserID {
		return c.Tier
	}
	return ""
}

// MayOrg reports whether the caller may see and spend organisation id's
// pools: one they belong to, or any for an ADMIN.
func (c Caller) MayOrg(id string) bool { return c.Admin() || slices.Contains(c.Orgs, id) }

// errUnauthenticated: no credentials, or credentials that do not verify.
var errUnauthenticated = errors.New("unauthenticated")

// tokenVerifier verifies a bearer token (jwks.Verifier).
type tokenVerifier interface {
	Verify(ctx context.Context, raw string) (*jwks.Claims, error)
}

// callerAuth identifies the token API's callers: by the x-leaky-* headers
// authz set, believed only from a trusted proxy (the gateway), or else by a
// bearer token verified against authz's key set.
type callerAuth struct {
	verify  tokenVerifier
	trusted []netip.Prefix
	tierFor func(roles []string) string
}

// identify returns r's caller. No usable credentials are
// errUnauthenticated (401); a key set that cannot be fetched wraps
// jwks.ErrUnavailable (503).
func (a *callerAuth) identify(r *http.Request) (Caller, error) {
	if a.fromTrustedProxy(r) {
		if uid := r.Header.Get(contract.HeaderUserID); uid != "" {
			c := Caller{UserID: uid, Tier: r.Header.Get(contract.HeaderTier)}
			if org := r.Header.Get(contract.HeaderOrgID); org != "" {
				c.Orgs = []string{org}
			}
			for role := range strings.SplitSeq(r.Header.Get(contract.HeaderRoles), ",") {
				if role = strings.TrimSpace(role); role != "" {
					c.Roles = append(c.Roles, role)
				}
			}
			return c, nil
		}
	}
	scheme, raw, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(raw) == "" || a.verify == nil {
		return Caller{}, errUnauthenticated
	}
	claims, err := a.verify.Verify(r.Context(), strings.TrimSpace(raw))
	switch {
	case errors.Is(err, jwks.ErrUnavailable):
		return Caller{}, fmt.Errorf("verify token: %w", err)
	case err != nil:
		return Caller{}, errUnauthenticated
	}
	c := Caller{UserID: claims.Subject, Orgs: claims.Orgs, Roles: claims.Roles}
	tierRoles := c.Roles
	if claims.Owner != "" {
		// A client's token: charged to its owner, at the owner's tier (as
		// authz's headers say on the gateway path), while what it may do
		// stays its own roles'.
		c.UserID, tierRoles = claims.Owner, claims.OwnerRoles
	}
	if a.tierFor != nil {
		c.Tier = a.tierFor(tierRoles)
	}
	return c, nil
}

// fromTrustedProxy reports whether r's peer is in a trusted CIDR.
func (a *callerAuth) fromTrustedProxy(r *http.Request) bool {
	if len(a.trusted) == 0 {
		return false
	}
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return false
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return false
	}
	ip = ip.Unmap()
	return slices.ContainsFunc(a.trusted, func(p netip.Prefix) bool { return p.Contains(ip) })
}
