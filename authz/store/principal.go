package store

import "slices"

// Principal is an authenticated caller, as a verified token or API key and
// the records behind it make it. It is not stored.
type Principal struct {
	UserID string   // the subject: a user id, or an OAuth2 client id
	Roles  []string // upper case, sorted
	Orgs   []string // ids of the organisations the caller belongs to, sorted
}

// IsAdmin reports whether p holds the ADMIN role.
func (p Principal) IsAdmin() bool { return slices.Contains(p.Roles, RoleAdmin) }
