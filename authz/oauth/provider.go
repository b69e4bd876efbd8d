// Package oauth is the service's OAuth2 server on ory/fosite:
// client_credentials and refresh_token grants, introspection and
// revocation, its storage on the service's store, and access tokens that
// are the service's own JWTs (authz/keyring), so Check verifies them like
// any other. Refresh tokens rotate on use; presenting a used one revokes
// its whole family and leaves a tombstone for it, so a token a concurrent
// rotation stores after the revocation is inactive too. The HTTP handlers
// that call the Provider live in package authz, which decides who a grant
// speaks for.
package oauth

import (
	"context"
	"crypto/sha256"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/ory/fosite"
	"github.com/ory/fosite/handler/oauth2"
	"github.com/ory/fosite/token/hmac"

	"github.com/leakytokens/leaky/authz/keyring"
	"github.com/leakytokens/leaky/authz/store"
)

// Options configure a Provider.
type Options struct {
	Issuer     string        // the tokens' iss
	Audience   string        // granted to every client
	TokenTTL   time.Duration // access token lifetime
	RefreshTTL time.Duration // refresh token lifetime
	Secret     string        // keys the refresh token HMAC
}

// Provider is fosite's OAuth2 provider on the service's store and key
// ring. Safe for concurrent use.
type Provider struct {
	fosite.OAuth2Provider
	storage  *storage
	strategy *accessTokenStrategy
	opt      Options
}

// New composes fosite with exactly the handlers in use:
// client_credentials, refresh_token (rotating, with family revocation on
// reuse), introspection and revocation. Access tokens are t's JWTs;
// refresh tokens are fosite HMAC tokens keyed by opt.Secret.
func New(st Storage, t *keyring.Tokens, opt Options) *Provider {
	global := sha256.Sum256([]byte("leaky-tokens oauth2 hmac v1:" + opt.Secret))
	fc := &fosite.Config{
		AccessTokenLifespan:        opt.TokenTTL,
		RefreshTokenLifespan:       opt.RefreshTTL,
		AccessTokenIssuer:          opt.Issuer,
		GlobalSecret:               global[:],
		ClientSecretsHasher:        secretHasher{},
		RefreshTokenScopes:         []string{}, // refresh tokens need no "offline" scope
		ScopeStrategy:              fosite.ExactScopeStrategy,
		AudienceMatchingStrategy:   fosite.DefaultAudienceMatchingStrategy,
		SendDebugMessagesToClients: false,
	}
	fs := &storage{st: st, audience: opt.Audience, familyTTL: opt.RefreshTTL + time.Hour}
	strategy := &accessTokenStrategy{
		HMACSHAStrategy: oauth2.NewHMACSHAStrategy(&hmac.HMACStrategy{Config: fc}, fc),
		tokens:          t,
	}
	p := fosite.NewOAuth2Provider(fs, fc)
	fc.TokenEndpointHandlers.Append(&oauth2.ClientCredentialsGrantHandler{
		HandleHelper: &oauth2.HandleHelper{AccessTokenStrategy: strategy, AccessTokenStorage: fs, Config: fc},
		Config:       fc,
	})
	fc.TokenEndpointHandlers.Append(&oauth2.RefreshTokenGrantHandler{
		AccessTokenStrategy: strategy, RefreshTokenStrategy: strategy, TokenRevocationStorage: fs, Config: fc,
	})
	fc.TokenIntrospectionHandlers.Append(&oauth2.CoreValidator{CoreStrategy: strategy, CoreStorage: fs, Config: fc})
	fc.RevocationHandlers.Append(&oauth2.TokenRevocationHandler{
		TokenRevocationStorage: fs, AccessTokenStrategy: strategy, RefreshTokenStrategy: strategy,
	})
	return &Provider{OAuth2Provider: p, storage: fs, strategy: strategy, opt: opt}
}

// IssuePair issues an access token and a rotating refresh token of the
// first-party client for p, recorded like any /oauth2/token grant; it
// returns the access token first.
func (p *Provider) IssuePair(ctx context.Context, who store.Principal) (string, string, error) {
	client, err := p.storage.GetClient(ctx, FirstPartyClientID)
	if err != nil {
		return "", "", err
	}
	now := time.Now().UTC()
	req := fosite.NewRequest()
	req.ID = uuid.NewString()
	req.RequestedAt = now
	req.Client = client
	req.GrantAudience(p.opt.Audience)
	sess := &Session{Subject: who.UserID, Roles: who.Roles, Orgs: who.Orgs}
	sess.SetExpiresAt(fosite.AccessToken, now.Add(p.opt.TokenTTL).Round(time.Second))
	sess.SetExpiresAt(fosite.RefreshToken, now.Add(p.opt.RefreshTTL).Round(time.Second))
	req.Session = sess
	access, accessSig, err := p.strategy.GenerateAccessToken(ctx, req)
	if err != nil {
		return "", "", err
	}
	refresh, refreshSig, err := p.strategy.GenerateRefreshToken(ctx, req)
	if err != nil {
		return "", "", err
	}
	if err := p.storage.CreateAccessTokenSession(ctx, accessSig, req); err != nil {
		return "", "", fmt.Errorf("store access token: %w", err)
	}
	if err := p.storage.CreateRefreshTokenSession(ctx, refreshSig, accessSig, req); err != nil {
		return "", "", fmt.Errorf("store refresh token: %w", err)
	}
	return access, refresh, nil
}
