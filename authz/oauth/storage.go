package oauth

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/ory/fosite"
	"github.com/ory/fosite/handler/oauth2"

	"github.com/leakytokens/leaky/authz/store"
)

// storedRequest is the serialised form of a fosite request.
type storedRequest struct {
	ID                string    `json:"id"`
	RequestedAt       time.Time `json:"requested_at"`
	ClientID          string    `json:"client_id"`
	RequestedScope    []string  `json:"requested_scope,omitempty"`
	GrantedScope      []string  `json:"granted_scope,omitempty"`
	RequestedAudience []string  `json:"requested_audience,omitempty"`
	GrantedAudience   []string  `json:"granted_audience,omitempty"`
	Session           *Session  `json:"session"`
}

// Storage is what the OAuth2 server keeps in the service's store: its
// clients and its token sessions.
type Storage interface {
	store.ClientStore
	store.TokenStore
}

// storage adapts Storage to the storage interfaces of the fosite handlers
// in use: clients, access and refresh token sessions, rotation and
// revocation. Authorization codes are not supported.
type storage struct {
	st       Storage
	audience string
	// familyTTL is how long a revoked family's tombstone is kept: longer
	// than any of its refresh tokens can live.
	familyTTL time.Duration
}

// tombstonePrefix marks the record of a revoked family among the refresh
// tokens; fosite's signatures are base64url, so they never contain ':'.
const tombstonePrefix = "family-revoked:"

var (
	_ fosite.ClientManager          = (*storage)(nil)
	_ oauth2.CoreStorage            = (*storage)(nil)
	_ oauth2.TokenRevocationStorage = (*storage)(nil)
)

var errNoCodes = errors.New("authorization codes are not supported")

// GetClient returns a client_credentials client from the store, or the
// built-in first-party public client.
func (f *storage) GetClient(ctx context.Context, id string) (fosite.Client, error) {
	if id == FirstPartyClientID {
		return &fosite.DefaultClient{ID: id, Public: true, GrantTypes: []string{"refresh_token"},
			Audience: []string{f.audience}}, nil
	}
	c, err := f.st.Client(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return nil, fosite.ErrNotFound
	} else if err != nil {
		return nil, err
	}
	return &fosite.DefaultClient{ID: c.ID, Secret: c.SecretDigest, GrantTypes: []string{"client_credentials"},
		Audience: []string{f.audience}}, nil
}

// ClientAssertionJWTValid accepts every jti: JWT client assertions are not
// enabled (no client has a key set).
func (f *storage) ClientAssertionJWTValid(context.Context, string) error { return nil }

func (f *storage) SetClientAssertionJWT(context.Context, string, time.Time) error { return nil }

func (f *storage) create(ctx context.Context, kind store.TokenKind, sig string, r fosite.Requester) error {
	sess, ok := r.GetSession().(*Session)
	if !ok {
		return fmt.Errorf("unexpected session type %T", r.GetSession())
	}
	data, err := json.Marshal(storedRequest{
		ID: r.GetID(), RequestedAt: r.GetRequestedAt(), ClientID: r.GetClient().GetID(),
		RequestedScope: r.GetRequestedScopes(), GrantedScope: r.GetGrantedScopes(),
		RequestedAudience: r.GetRequestedAudience(), GrantedAudience: r.GetGrantedAudience(), Session: sess,
	})
	if err != nil {
		return err
	}
	tokenType := fosite.AccessToken
	if kind == store.RefreshToken {
		tokenType = fosite.RefreshToken
	}
	exp := sess.GetExpiresAt(tokenType)
	if exp.IsZero() {
		exp = time.Now().Add(24 * time.Hour)
	}
	revoked, err := f.familyRevoked(ctx, r.GetID())
	if err != nil {
		return err
	}
	return f.st.CreateToken(ctx, store.TokenSession{Kind: kind, Signature: sig, RequestID: r.GetID(),
		Active: !revoked, Data: data, ExpiresAt: exp})
}

// familyRevoked reports whether the family requestID has a tombstone.
func (f *storage) familyRevoked(ctx context.Context, requestID string) (bool, error) {
	_, err := f.st.Token(ctx, store.RefreshToken, tombstonePrefix+requestID)
	if errors.Is(err, store.ErrNotFound) {
		return false, nil
	}
	return err == nil, err
}

// get loads a token's request; an inactive token returns the request
// together with fosite.ErrInactiveToken, as reuse detection needs.
func (f *storage) get(ctx context.Context, kind store.TokenKind, sig string) (fosite.Requester, error) {
	t, err := f.st.Token(ctx, kind, sig)
	if errors.Is(err, store.ErrNotFound) {
		return nil, fosite.ErrNotFound
	} else if err != nil {
		return nil, err
	}
	var sr storedRequest
	if err := json.Unmarshal(t.Data, &sr); err != nil {
		return nil, fmt.Errorf("decode token session: %w", err)
	}
	client, err := f.GetClient(ctx, sr.ClientID)
	if err != nil {
		return nil, err
	}
	if sr.Session == nil {
		sr.Session = &Session{}
	}
	req := &fosite.Request{
		ID: sr.ID, RequestedAt: sr.RequestedAt, Client: client,
		RequestedScope: sr.RequestedScope, GrantedScope: sr.GrantedScope,
		RequestedAudience: sr.RequestedAudience, GrantedAudience: sr.GrantedAudience,
		Session: sr.Session, Form: map[string][]string{},
	}
	if !t.Active {
		return req, fosite.ErrInactiveToken
	}
	// A token stored by a rotation that raced the family's revocation is
	// still active, but its family has a tombstone.
	if revoked, err := f.familyRevoked(ctx, t.RequestID); err != nil {
		return nil, err
	} else if revoked {
		return req, fosite.ErrInactiveToken
	}
	return req, nil
}

func (f *storage) CreateAccessTokenSession(ctx context.Context, sig string, r fosite.Requester) error {
	return f.create(ctx, store.AccessToken, sig, r)
}

func (f *storage) GetAccessTokenSession(ctx context.Context, sig string, _ fosite.Session) (fosite.Requester, error) {
	return f.get(ctx, store.AccessToken, sig)
}

func (f *storage) DeleteAccessTokenSession(ctx context.Context, sig string) error {
	return f.st.DeleteToken(ctx, store.AccessToken, sig)
}

func (f *storage) CreateRefreshTokenSession(ctx context.Context, sig, _ string, r fosite.Requester) error {
	return f.create(ctx, store.RefreshToken, sig, r)
}

// isTombstone reports whether a presented signature names a family
// tombstone. fosite looks refresh tokens up by the signature a client sent
// before it checks the token's HMAC, so such signatures must find nothing.
func isTombstone(sig string) bool { return strings.HasPrefix(sig, tombstonePrefix) }

func (f *storage) GetRefreshTokenSession(ctx context.Context, sig string, _ fosite.Session) (fosite.Requester, error) {
	if isTombstone(sig) {
		return nil, fosite.ErrNotFound
	}
	return f.get(ctx, store.RefreshToken, sig)
}

func (f *storage) DeleteRefreshTokenSession(ctx context.Context, sig string) error {
	if isTombstone(sig) {
		return fosite.ErrNotFound
	}
	return f.st.DeleteToken(ctx, store.RefreshToken, sig)
}

// RotateRefreshToken consumes the presented refresh token (atomically, so
// of two concurrent refreshes one fails) and retires the family's access
// tokens.
func (f *storage) RotateRefreshToken(ctx context.Context, requestID, sig string) error {
	if isTombstone(sig) {
		return fosite.ErrNotFound
	}
	if err := f.st.ConsumeToken(ctx, store.RefreshToken, sig); errors.Is(err, store.ErrNotFound) {
		return fosite.ErrNotFound
	} else if err != nil {
		return err
	}
	return f.st.DeactivateTokens(ctx, store.AccessToken, requestID)
}

// RevokeRefreshToken deactivates every refresh token of the family and
// leaves a tombstone for it, which create and get consult: a rotation of
// the family that consumed its token before this call and stores its new
// tokens after it gets inactive tokens. Without the tombstone, reuse
// detection racing a legitimate refresh would leave the newest token alive.
func (f *storage) RevokeRefreshToken(ctx context.Context, requestID string) error {
	err := f.st.CreateToken(ctx, store.TokenSession{Kind: store.RefreshToken, Signature: tombstonePrefix + requestID,
		RequestID: requestID, Active: false, Data: []byte("{}"), ExpiresAt: time.Now().Add(f.familyTTL)})
	if err != nil && !errors.Is(err, store.ErrConflict) {
		return fmt.Errorf("family tombstone: %w", err)
	}
	return f.st.DeactivateTokens(ctx, store.RefreshToken, requestID)
}

// RevokeAccessToken deactivates every access token of the family.
func (f *storage) RevokeAccessToken(ctx context.Context, requestID string) error {
	return f.st.DeactivateTokens(ctx, store.AccessToken, requestID)
}

func (f *storage) CreateAuthorizeCodeSession(context.Context, string, fosite.Requester) error {
	return errNoCodes
}

func (f *storage) GetAuthorizeCodeSession(context.Context, string, fosite.Session) (fosite.Requester, error) {
	return nil, fosite.ErrNotFound
}

func (f *storage) InvalidateAuthorizeCodeSession(context.Context, string) error {
	return errNoCodes
}

// secretHasher compares client secrets by SHA-256: they are 256 random
// bits, so a slow hash buys nothing.
type secretHasher struct{}

func (secretHasher) Hash(_ context.Context, data []byte) ([]byte, error) {
	sum := sha256.Sum256(data)
	return sum[:], nil
}

func (secretHasher) Compare(_ context.Context, hash, data []byte) error {
	sum := sha256.Sum256(data)
	if len(hash) != len(sum) || subtle.ConstantTimeCompare(hash, sum[:]) != 1 {
		return fosite.ErrInvalidClient
	}
	return nil
}
