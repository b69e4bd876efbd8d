package contract

import "regexp"

// orgIDPattern is the form of an organisation id, as authz issues them and
// the token API accepts them.
var orgIDPattern = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{1,62}$`)

// ValidOrgID reports whether id has the form of an organisation id: 2 to
// 63 lower-case letters, digits and '-', not starting with '-'.
func ValidOrgID(id string) bool { return orgIDPattern.MatchString(id) }
