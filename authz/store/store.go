// Package store is the authz service's persistence vocabulary: the records
// (users, API keys, organisations, OAuth2 clients, signing keys, token
// sessions), the Store interface, its errors, the memory implementation,
// and the Principal those records make of an authenticated caller.
// authz/pgstore implements it on PostgreSQL; authz/storetest checks both.
package store

import (
	"context"
	"errors"
	"time"

	"github.com/leakytokens/leaky/authz/apikey"
	"github.com/leakytokens/leaky/internal/contract"
)

// Store errors. Implementations wrap them so errors.Is finds them.
var (
	// ErrNotFound: no such record, or one the caller may not see.
	ErrNotFound = errors.New("not found")
	// ErrConflict: a unique constraint (username, email, organisation id,
	// signing key id, token signature) would be violated.
	ErrConflict = errors.New("already exists")
	// ErrLimit: the record would exceed a bound the caller passed (the
	// clients one user may own).
	ErrLimit = errors.New("limit reached")
)

// Role names the service itself gives meaning to. Roles are upper case.
const (
	RoleUser  = "USER"
	RoleAdmin = "ADMIN"
)

// User is a registered account. Roles are upper-case names, sorted.
type User struct {
	ID           string
	Username     string
	Email        string
	PasswordHash string // PHC-format argon2id; never leaves the service
	Roles        []string
	CreatedAt    time.Time
}

// APIKey is a stored API key: its digest, never the key.
type APIKey struct {
	ID        string // apikey.Key.ID
	UserID    string
	Name      string
	Digest    apikey.Digest
	CreatedAt time.Time
	ExpiresAt time.Time // zero: never
}

// ValidOrgID reports whether id has the form of an organisation id
// (contract.ValidOrgID: the token API checks the same form).
func ValidOrgID(id string) bool { return contract.ValidOrgID(id) }

// Org is an organisation. Its ID is a short slug chosen at creation; it is
// what x-leaky-org names and x-leaky-org-id carries.
type Org struct {
	ID        string
	Name      string
	CreatedAt time.Time
}

// Member is one user's membership of an organisation.
type Member struct {
	OrgID  string
	UserID string
	Admin  bool // may add and remove members
}

// Client is an OAuth2 client for the client_credentials grant: a service
// account of its owner, or an organisation's app when OrgID is set. Its
// tokens carry Roles and, when set, OrgID.
type Client struct {
	ID           string
	SecretDigest []byte // SHA-256 of the secret
	OwnerID      string
	OrgID        string
	Roles        []string
	CreatedAt    time.Time
}

// SigningKey is a JWT signing key sealed with the configured secret.
type SigningKey struct {
	KID       string
	Sealed    []byte
	CreatedAt time.Time
}

// TokenKind says which OAuth2 token a TokenSession describes.
type TokenKind string

const (
	AccessToken  TokenKind = "access"
	RefreshToken TokenKind = "refresh"
)

// TokenSession is fosite's record of one issued access or refresh token.
// RequestID is shared by every token of one grant and its refreshes (the
// family); Data is the serialised request.
type TokenSession struct {
	Kind      TokenKind
	Signature string
	RequestID string
	Active    bool
	Data      []byte
	ExpiresAt time.Time
}

// UserStore keeps accounts and their roles.
type UserStore interface {
	// CreateUser fails with ErrConflict on a taken username or email
	// (compared case-insensitively).
	CreateUser(ctx context.Context, u User) error
	UserByID(ctx context.Context, id string) (User, error)
	UserByUsername(ctx context.Context, username string) (User, error)
	GrantRole(ctx context.Context, userID, role string) error
	RevokeRole(ctx context.Context, userID, role string) error
}

// KeyStore keeps API keys.
type KeyStore interface {
	CreateAPIKey(ctx context.Context, k APIKey) error
	APIKeyByID(ctx context.Context, id string) (APIKey, error)
	// APIKeys lists a user's keys, oldest first.
	APIKeys(ctx context.Context, userID string) ([]APIKey, error)
	// DeleteAPIKey fails with ErrNotFound unless userID owns key id.
	DeleteAPIKey(ctx context.Context, userID, id string) error
}

// OrgStore keeps organisations and memberships.
type OrgStore interface {
	// CreateOrg creates o with admin as its first, admin member.
	CreateOrg(ctx context.Context, o Org, admin string) error
	Org(ctx context.Context, id string) (Org, error)
	// PutMember adds a member or changes an existing member's Admin flag.
	PutMember(ctx context.Context, m Member) error
	RemoveMember(ctx context.Context, orgID, userID string) error
	// Members lists an organisation's members ordered by user id.
	Members(ctx context.Context, orgID string) ([]Member, error)
	// UserOrgs lists the ids of the organisations userID belongs to, sorted.
	UserOrgs(ctx context.Context, userID string) ([]string, error)
}

// ClientStore keeps OAuth2 clients.
type ClientStore interface {
	// CreateClient fails with ErrConflict on a taken id, ErrNotFound when
	// the owner, or the organisation when OrgID is set, is missing, and
	// ErrLimit when the owner already owns maxPerOwner clients (checked
	// atomically with the insert: concurrent creations never exceed it).
	CreateClient(ctx context.Context, c Client, maxPerOwner int) error
	Client(ctx context.Context, id string) (Client, error)
}

// SigningKeyStore keeps the sealed JWT signing keys.
type SigningKeyStore interface {
	// CreateSigningKey fails with ErrConflict on a taken KID.
	CreateSigningKey(ctx context.Context, k SigningKey) error
	// SigningKeys lists every key, oldest first.
	SigningKeys(ctx context.Context) ([]SigningKey, error)
}

// TokenStore keeps fosite's token sessions.
type TokenStore interface {
	CreateToken(ctx context.Context, t TokenSession) error
	// Token returns the session, active or not.
	Token(ctx context.Context, kind TokenKind, signature string) (TokenSession, error)
	DeleteToken(ctx context.Context, kind TokenKind, signature string) error
	// ConsumeToken marks one active token inactive, atomically: of two
	// concurrent calls one succeeds and the other gets ErrNotFound, as does
	// a call for a missing or already inactive token.
	ConsumeToken(ctx context.Context, kind TokenKind, signature string) error
	// DeactivateTokens marks every token of kind in the family requestID
	// inactive. Finding none is not an error.
	DeactivateTokens(ctx context.Context, kind TokenKind, requestID string) error
	// PurgeTokens deletes every token that expired before t and returns how
	// many it deleted.
	PurgeTokens(ctx context.Context, t time.Time) (int64, error)
}

// Store is everything the service keeps. Memory and authz/pgstore
// implement it; authz/storetest checks both.
type Store interface {
	UserStore
	KeyStore
	OrgStore
	ClientStore
	SigningKeyStore
	TokenStore
	// Ping reports whether the backend answers.
	Ping(ctx context.Context) error
	Close()
}
