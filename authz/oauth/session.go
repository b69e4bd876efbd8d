package oauth

import (
	"time"

	"github.com/ory/fosite"
)

// FirstPartyClientID is the built-in public client whose refresh tokens
// login and registration hand out (IssuePair); it may only use the
// refresh_token grant.
const FirstPartyClientID = "leaky-cli"

// Session is the fosite session: who the tokens speak for. It is stored
// with every token and becomes the access token's claims. Every request
// handed to the Provider carries a *Session.
type Session struct {
	Subject string   `json:"sub"`
	Roles   []string `json:"roles"`
	Orgs    []string `json:"orgs,omitempty"`
	// Owner and OwnerRoles are a client's owner and the owner's roles,
	// empty for a user's tokens; they become the access token's owner
	// claims, the account the client's requests are charged to.
	Owner      string                         `json:"owner,omitempty"`
	OwnerRoles []string                       `json:"owner_roles,omitempty"`
	ExpiresAt  map[fosite.TokenType]time.Time `json:"exp"`
}

var _ fosite.Session = (*Session)(nil)

// SetExpiresAt implements fosite.Session.
func (s *Session) SetExpiresAt(key fosite.TokenType, exp time.Time) {
	if s.ExpiresAt == nil {
		s.ExpiresAt = map[fosite.TokenType]time.Time{}
	}
	s.ExpiresAt[key] = exp
}

// GetExpiresAt implements fosite.Session.
func (s *Session) GetExpiresAt(key fosite.TokenType) time.Time { return s.ExpiresAt[key] }

// GetUsername implements fosite.Session; sessions have no username.
func (s *Session) GetUsername() string { return "" }

// GetSubject implements fosite.Session.
func (s *Session) GetSubject() string { return s.Subject }

// Clone implements fosite.Session.
func (s *Session) Clone() fosite.Session {
	c := *s
	c.Roles = append([]string(nil), s.Roles...)
	c.Orgs = append([]string(nil), s.Orgs...)
	c.OwnerRoles = append([]string(nil), s.OwnerRoles...)
	c.ExpiresAt = make(map[fosite.TokenType]time.Time, len(s.ExpiresAt))
	for k, v := range s.ExpiresAt {
		c.ExpiresAt[k] = v
	}
	return &c
}
