package oauth

import (
	"context"
	"fmt"
	"strings"

	"github.com/golang-jwt/jwt/v5"
	"github.com/ory/fosite"
	"github.com/ory/fosite/handler/oauth2"

	"github.com/leakytokens/leaky/authz/keyring"
)

// accessTokenStrategy issues fosite's access tokens as the service's own
// JWTs (so Check verifies them like any other) and leaves refresh tokens
// to fosite's HMAC strategy.
type accessTokenStrategy struct {
	*oauth2.HMACSHAStrategy
	tokens *keyring.Tokens
}

var _ oauth2.CoreStrategy = (*accessTokenStrategy)(nil)

func (a *accessTokenStrategy) AccessTokenSignature(_ context.Context, token string) string {
	if i := strings.LastIndexByte(token, '.'); i >= 0 {
		return token[i+1:]
	}
	return ""
}

func (a *accessTokenStrategy) GenerateAccessToken(_ context.Context, r fosite.Requester) (string, string, error) {
	sess, ok := r.GetSession().(*Session)
	if !ok {
		return "", "", fmt.Errorf("unexpected session type %T", r.GetSession())
	}
	c := keyring.Claims{Roles: sess.Roles, Orgs: sess.Orgs, ClientID: r.GetClient().GetID(), Scope: r.GetGrantedScopes(),
		Owner: sess.Owner, OwnerRoles: sess.OwnerRoles}
	c.Subject = sess.Subject
	c.Audience = append(c.Audience, r.GetGrantedAudience()...)
	if exp := sess.GetExpiresAt(fosite.AccessToken); !exp.IsZero() {
		c.ExpiresAt = jwt.NewNumericDate(exp)
	}
	tok, err := a.tokens.Issue(c)
	if err != nil {
		return "", "", err
	}
	return tok, a.AccessTokenSignature(context.Background(), tok), nil
}

func (a *accessTokenStrategy) ValidateAccessToken(_ context.Context, _ fosite.Requester, token string) error {
	if _, err := a.tokens.Verify(token); err != nil {
		return fosite.ErrTokenExpired.WithWrap(err)
	}
	return nil
}
