package authz

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/ory/fosite"

	"github.com/leakytokens/leaky/authz/oauth"
	"github.com/leakytokens/leaky/authz/store"
	"github.com/leakytokens/leaky/internal/serve"
)

// oauthRoutes registers the OAuth2 endpoints. Token, introspection and
// revocation get the REST handlers' deadline (restTimeout) on their store
// work.
func (s *Service) oauthRoutes(mux *http.ServeMux) {
	deadline := func(f http.HandlerFunc) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			ctx, cancel := context.WithTimeout(r.Context(), restTimeout)
			defer cancel()
			f(w, r.WithContext(ctx))
		}
	}
	mux.HandleFunc("POST /oauth2/token", deadline(s.token))
	mux.HandleFunc("POST /oauth2/introspect", deadline(s.introspect))
	mux.HandleFunc("POST /oauth2/revoke", deadline(s.revoke))
	mux.HandleFunc("GET /.well-known/oauth-authorization-server", s.metadata)
}

// token serves /oauth2/token. The caller's identity is read from the store
// at every grant, so a refreshed token carries current roles and
// organisations.
func (s *Service) token(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	if err := readForm(w, r); err != nil {
		s.oauthError(w, r, nil, err)
		return
	}
	sess := &oauth.Session{}
	ar, err := s.oauth.NewAccessRequest(ctx, r, sess)
	if err != nil {
		s.oauthError(w, r, ar, err)
		return
	}
	grant := "refresh_token"
	if ar.GetGrantTypes().ExactOne("client_credentials") {
		grant = "client_credentials"
		for _, scope := range ar.GetRequestedScopes() {
			ar.GrantScope(scope)
		}
	}
	if err := s.identify(ctx, ar); err != nil {
		s.oauthError(w, r, ar, err)
		return
	}
	if !slices.Contains(ar.GetGrantedAudience(), s.cfg.Audience) {
		ar.GrantAudience(s.cfg.Audience)
	}
	resp, err := s.oauth.NewAccessResponse(ctx, ar)
	if err != nil {
		s.oauthError(w, r, ar, err)
		return
	}
	s.metrics.tokens.WithLabelValues(grant).Inc()
	s.oauth.WriteAccessResponse(ctx, w, ar, resp)
}

// identify fills the session of a token request from the store: a client's
// roles and organisation as far as its owner still holds them
// (clientPrincipal), or a user's current roles and organisations.
func (s *Service) identify(ctx context.Context, ar fosite.AccessRequester) error {
	sess, ok := ar.GetSession().(*oauth.Session)
	if !ok {
		return fosite.ErrServerError.WithDebug("unexpected session type")
	}
	clientID := ar.GetClient().GetID()
	if clientID != oauth.FirstPartyClientID {
		c, err := s.store.Client(ctx, clientID)
		if errors.Is(err, store.ErrNotFound) {
			return fosite.ErrInvalidClient.WithWrap(err)
		} else if err != nil {
			return fosite.ErrServerError.WithWrap(err)
		}
		p, err := s.clientPrincipal(ctx, c)
		if errors.Is(err, errClientRevoked) {
			return fosite.ErrUnauthorizedClient.WithHint("The client's owner no longer holds the authority the client was created with.")
		} else if err != nil {
			return fosite.ErrServerError.WithWrap(err)
		}
		sess.Subject, sess.Roles, sess.Orgs = p.UserID, p.Roles, p.Orgs
		sess.Owner, sess.OwnerRoles = p.Owner, p.OwnerRoles
		return nil
	}
	u, err := s.store.UserByID(ctx, sess.Subject)
	if errors.Is(err, store.ErrNotFound) {
		return fosite.ErrInvalidGrant.WithHint("The user no longer exists.")
	} else if err != nil {
		return fosite.ErrServerError.WithWrap(err)
	}
	orgs, err := s.store.UserOrgs(ctx, u.ID)
	if err != nil {
		return fosite.ErrServerError.WithWrap(err)
	}
	sess.Roles, sess.Orgs = u.Roles, orgs
	return nil
}

// introspect serves /oauth2/introspect to confidential clients only (HTTP
// Basic with the client's secret). fosite would also accept any access
// token as the caller's credential, which would let every user probe
// other people's tokens. A client reads its own tokens; another client's,
// or a user's, only when it acts as ADMIN (mayIntrospect): to any other
// caller such a token is inactive, as RFC 7662 asks.
func (s *Service) introspect(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	id, _, ok := r.BasicAuth()
	if !ok || id == oauth.FirstPartyClientID {
		s.oauth.WriteIntrospectionError(ctx, w, fosite.ErrRequestUnauthorized.WithHint("Introspection requires a confidential client's credentials (HTTP Basic)."))
		return
	}
	if err := readForm(w, r); err != nil {
		s.oauthError(w, r, nil, err)
		return
	}
	ir, err := s.oauth.NewIntrospectionRequest(ctx, r, &oauth.Session{})
	if oauthUnavailable(err) {
		s.oauthError(w, r, nil, err)
		return
	} else if err != nil {
		s.oauth.WriteIntrospectionError(ctx, w, err)
		return
	}
	caller, _ := url.QueryUnescape(id) // as fosite read it: it authenticated this id
	allowed, err := s.mayIntrospect(ctx, caller, ir.GetAccessRequester().GetClient().GetID())
	if err != nil {
		s.oauthError(w, r, nil, err)
		return
	}
	if !allowed {
		s.oauth.WriteIntrospectionError(ctx, w, fosite.ErrInactiveToken)
		return
	}
	s.oauth.WriteIntrospectionResponse(ctx, w, ir)
}

// revoke serves /oauth2/revoke. fosite answers 200 to any failure but a
// bad request or client, which would tell a client its token is revoked
// when the store did not answer: that is 503.
func (s *Service) revoke(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	if err := readForm(w, r); err != nil {
		s.oauthError(w, r, nil, err)
		return
	}
	if err := s.oauth.NewRevocationRequest(ctx, r); oauthUnavailable(err) {
		s.oauthError(w, r, nil, err)
	} else {
		s.oauth.WriteRevocationResponse(ctx, w, err)
	}
}

// metadata serves RFC 8414 authorization server metadata. Endpoint URLs
// start with the configured PublicURL (else http://<bound HTTP address>),
// never with the request's Host or X-Forwarded-Proto, which a client
// controls.
func (s *Service) metadata(w http.ResponseWriter, _ *http.Request) {
	base := strings.TrimSuffix(s.cfg.PublicURL, "/")
	if base == "" {
		base = "http://" + s.HTTPAddr()
	}
	serve.WriteJSON(w, http.StatusOK, map[string]any{
		"issuer":                                s.cfg.Issuer,
		"token_endpoint":                        base + "/oauth2/token",
		"introspection_endpoint":                base + "/oauth2/introspect",
		"revocation_endpoint":                   base + "/oauth2/revoke",
		"jwks_uri":                              base + "/oauth2/jwks",
		"grant_types_supported":                 []string{"client_credentials", "refresh_token"},
		"response_types_supported":              []string{},
		"token_endpoint_auth_methods_supported": []string{"client_secret_basic", "client_secret_post", "none"},
		"introspection_endpoint_auth_methods_supported": []string{"client_secret_basic"},
		"revocation_endpoint_auth_methods_supported":    []string{"client_secret_basic", "client_secret_post", "none"},
	})
}

// issuePair issues an access token and a rotating refresh token of the
// first-party client for p, recorded like any /oauth2/token grant.
func (s *Service) issuePair(ctx context.Context, p store.Principal) (string, string, error) {
	return s.oauth.IssuePair(ctx, p)
}

// maxClientRoles caps the roles of one client_credentials client.
const maxClientRoles = 16

// createClient registers a client_credentials client owned by the caller:
// a service account, or an organisation's app when orgId names an
// organisation the caller administers. Its roles are a subset of the
// caller's (USER when none are asked for). Its requests are charged to the
// caller's budgets (and an app's to its organisation's pool too), and a
// caller may own the policy's max_clients_per_user of them (409 beyond).
// The secret is shown once.
func (s *Service) createClient(w http.ResponseWriter, r *http.Request) error {
	p, err := s.authority(r)
	if err != nil {
		return err
	}
	var in struct {
		OrgID string   `json:"orgId"`
		Roles []string `json:"roles"`
	}
	if err := decodeJSON(w, r, &in); err != nil {
		return err
	}
	roles := store.NormRoles(in.Roles)
	if len(roles) == 0 {
		roles = []string{store.RoleUser}
	}
	if len(roles) > maxClientRoles {
		return badRequest(fmt.Sprintf("roles: at most %d", maxClientRoles))
	}
	for _, role := range roles {
		if !rolePattern.MatchString(role) {
			return badRequest("roles: each 2 to 32 upper-case letters, digits or '_'")
		}
	}
	for _, role := range roles {
		if !p.IsAdmin() && !slices.Contains(p.Roles, role) {
			return forbiddenErr("a client may only hold roles its owner holds")
		}
	}
	if in.OrgID != "" {
		if err := s.orgAdmin(r, p, in.OrgID); err != nil {
			return err
		}
	}
	var idb, secret [24]byte
	_, _ = rand.Read(idb[:])
	_, _ = rand.Read(secret[:])
	sec := base64.RawURLEncoding.EncodeToString(secret[:])
	digest := sha256.Sum256([]byte(sec))
	c := store.Client{ID: "svc_" + base64.RawURLEncoding.EncodeToString(idb[:12]), SecretDigest: digest[:],
		OwnerID: p.UserID, OrgID: in.OrgID, Roles: roles, CreatedAt: time.Now().UTC().Truncate(time.Microsecond)}
	limit := s.policy.Load().MaxClientsPerUser
	switch err := s.store.CreateClient(r.Context(), c, limit); {
	case errors.Is(err, store.ErrNotFound):
		return forbiddenErr("only users can create clients")
	case errors.Is(err, store.ErrLimit):
		return &apiError{http.StatusConflict, "client_limit",
			fmt.Sprintf("a user may own at most %d clients (the policy's max_clients_per_user)", limit)}
	case err != nil:
		return err
	}
	serve.WriteJSON(w, http.StatusCreated, map[string]any{"clientId": c.ID, "clientSecret": sec, "orgId": c.OrgID,
		"roles": c.Roles, "tokenUrl": "/oauth2/token"})
	return nil
}
