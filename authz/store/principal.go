package store

import "slices"

// Principal is an authenticated caller, as a verified token or API key and
// the records behind it make it. It is not stored.
type Principal struct {
	UserID string   // the subject: a user id, or an OAuth2 client id
	Roles  []string // upper case, sorted
	Orgs   []string // ids of the organisations the caller belongs to, sorted
	// Owner is, for an OAuth2 client, the id of the user who owns it, and
	// OwnerRoles that user's roles; both are empty for a user. A client's
	// requests are charged to its owner's budgets (see Account).
	Owner      string
	OwnerRoles []string
}

// IsAdmin reports whether p holds the ADMIN role.
func (p Principal) IsAdmin() bool { return slices.Contains(p.Roles, RoleAdmin) }

// Account returns the user whose budgets p's requests are charged to and
// the roles that choose that user's tier: a client's owner and the
// owner's roles, else p's own. So however many clients a user creates,
// they all spend the one budget their owner has.
func (p Principal) Account() (string, []string) {
	if p.Owner != "" {
		return p.Owner, p.OwnerRoles
	}
	return p.UserID, p.Roles
}
