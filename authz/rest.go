package authz

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"

	"github.com/leakytokens/leaky/authz/extauthz"
	"github.com/leakytokens/leaky/authz/keyauth"
	"github.com/leakytokens/leaky/authz/store"
	"github.com/leakytokens/leaky/internal/contract"
	"github.com/leakytokens/leaky/internal/serve"
)

var (
	usernamePattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{2,49}$`)
	emailPattern    = regexp.MustCompile(`^[^@\s]{1,64}@[^@\s]+\.[^@\s]+$`)
	rolePattern     = regexp.MustCompile(`^[A-Z][A-Z0-9_]{1,31}$`)
)

// minPasswordLen is the shortest password, in characters (runes), as
// maxPasswordLen is the longest.
const minPasswordLen = 8

// restTimeout bounds each REST request's store work, so a stalled database
// answers 503 rather than holding connections.
const restTimeout = 5 * time.Second

func (s *Service) restRoutes(mux *http.ServeMux) {
	h := func(f func(http.ResponseWriter, *http.Request) error) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			ctx, cancel := context.WithTimeout(r.Context(), restTimeout)
			defer cancel()
			r = r.WithContext(ctx)
			if err := f(w, r); err != nil {
				s.writeError(w, r, err)
			}
		}
	}
	mux.HandleFunc("POST /api/v1/auth/register", h(s.register))
	mux.HandleFunc("POST /api/v1/auth/login", h(s.login))
	mux.HandleFunc("GET /api/v1/auth/me", h(s.me))
	mux.HandleFunc("POST /api/v1/auth/users/{id}/roles", h(s.grantRole))
	mux.HandleFunc("DELETE /api/v1/auth/users/{id}/roles/{role}", h(s.revokeRole))
	mux.HandleFunc("POST /api/v1/auth/api-keys", h(s.createKey))
	mux.HandleFunc("GET /api/v1/auth/api-keys", h(s.listKeys))
	mux.HandleFunc("DELETE /api/v1/auth/api-keys", h(s.revokeKey))
	mux.HandleFunc("DELETE /api/v1/auth/api-keys/{id}", h(s.revokeKey))
	mux.HandleFunc("GET /api/v1/auth/api-keys/validate", h(s.validateKey))
	mux.HandleFunc("POST /api/v1/auth/orgs", h(s.createOrg))
	mux.HandleFunc("GET /api/v1/auth/orgs", h(s.listOrgs))
	mux.HandleFunc("GET /api/v1/auth/orgs/{org}/members", h(s.listMembers))
	mux.HandleFunc("POST /api/v1/auth/orgs/{org}/members", h(s.addMember))
	mux.HandleFunc("DELETE /api/v1/auth/orgs/{org}/members/{user}", h(s.removeMember))
	mux.HandleFunc("POST /api/v1/auth/clients", h(s.createClient))
}

var errUnauthenticated = &apiError{http.StatusUnauthorized, "unauthenticated", "a valid Bearer token or X-Api-Key is required"}

// principal authenticates an HTTP API caller by Bearer JWT, or by API key
// when apiKeyAllowed.
func (s *Service) principal(r *http.Request, apiKeyAllowed bool) (store.Principal, error) {
	if a := r.Header.Get("Authorization"); a != "" {
		scheme, tok, ok := strings.Cut(strings.TrimSpace(a), " ")
		tok = strings.TrimSpace(tok)
		if !ok || !strings.EqualFold(scheme, "bearer") || len(tok) > extauthz.MaxCredentialLen {
			return store.Principal{}, errUnauthenticated
		}
		if !strings.HasPrefix(tok, "lt_") {
			c, err := s.tokens.Verify(tok)
			if err != nil {
				return store.Principal{}, errUnauthenticated
			}
			return c.Principal(), nil
		}
		if !apiKeyAllowed {
			return store.Principal{}, errUnauthenticated
		}
		return s.keyPrincipal(r.Context(), tok)
	}
	if k := r.Header.Get(contract.HeaderAPIKey); k != "" && apiKeyAllowed {
		return s.keyPrincipal(r.Context(), k)
	}
	return store.Principal{}, errUnauthenticated
}

func (s *Service) keyPrincipal(ctx context.Context, raw string) (store.Principal, error) {
	p, _, err := s.keys.Verify(ctx, raw)
	switch {
	case errors.Is(err, keyauth.ErrInvalid), errors.Is(err, keyauth.ErrExpired):
		return store.Principal{}, errUnauthenticated
	case err != nil:
		return store.Principal{}, err
	}
	return p, nil
}

type authResponse struct {
	UserID       string   `json:"userId"`
	Username     string   `json:"username"`
	Email        string   `json:"email,omitempty"`
	Roles        []string `json:"roles"`
	Token        string   `json:"token"`
	TokenType    string   `json:"tokenType"`
	ExpiresIn    int64    `json:"expiresIn"`
	RefreshToken string   `json:"refreshToken,omitempty"`
}

func (s *Service) register(w http.ResponseWriter, r *http.Request) error {
	var in struct {
		Username string `json:"username"`
		Email    string `json:"email"`
		Password string `json:"password"`
	}
	if err := decodeJSON(w, r, &in); err != nil {
		return err
	}
	in.Username, in.Email = strings.TrimSpace(in.Username), strings.TrimSpace(in.Email)
	switch {
	case !usernamePattern.MatchString(in.Username):
		return badRequest("username: 3 to 50 letters, digits, '.', '_' or '-'")
	case len(in.Email) > 100 || !emailPattern.MatchString(in.Email):
		return badRequest("email: not a valid address")
	case utf8.RuneCountInString(in.Password) < minPasswordLen || utf8.RuneCountInString(in.Password) > maxPasswordLen:
		return badRequest(fmt.Sprintf("password: %d to %d characters", minPasswordLen, maxPasswordLen))
	}
	hash, err := s.hasher.hash(r.Context(), in.Password)
	if err != nil {
		return err
	}
	u := store.User{ID: uuid.NewString(), Username: in.Username, Email: in.Email, PasswordHash: hash,
		Roles: []string{store.RoleUser}, CreatedAt: time.Now().UTC().Truncate(time.Microsecond)}
	if err := s.store.CreateUser(r.Context(), u); errors.Is(err, store.ErrConflict) {
		return &apiError{http.StatusConflict, "conflict", "username or email already registered"}
	} else if err != nil {
		return err
	}
	resp, err := s.session(r.Context(), u, "register")
	if err != nil {
		return err
	}
	serve.WriteJSON(w, http.StatusCreated, resp)
	return nil
}

func (s *Service) login(w http.ResponseWriter, r *http.Request) error {
	var in struct {
		Username string `json:"username"`
		Password string `json:"password"`
	}
	if err := decodeJSON(w, r, &in); err != nil {
		return err
	}
	bad := &apiError{http.StatusUnauthorized, "invalid_credentials", "invalid username or password"}
	if in.Username == "" || in.Password == "" || utf8.RuneCountInString(in.Password) > maxPasswordLen {
		return bad
	}
	u, err := s.store.UserByUsername(r.Context(), strings.TrimSpace(in.Username))
	if errors.Is(err, store.ErrNotFound) {
		// As slow as a wrong password.
		if _, err := s.hasher.verify(r.Context(), s.dummyHash, in.Password); errors.Is(err, errHasherBusy) {
			return err
		}
		return bad
	} else if err != nil {
		return err
	}
	if ok, err := s.hasher.verify(r.Context(), u.PasswordHash, in.Password); errors.Is(err, errHasherBusy) {
		return err
	} else if err != nil || !ok {
		return bad
	}
	resp, err := s.session(r.Context(), u, "login")
	if err != nil {
		return err
	}
	serve.WriteJSON(w, http.StatusOK, resp)
	return nil
}

// session issues an access token (and, through the OAuth2 server, a
// refresh token for the first-party client) for u.
func (s *Service) session(ctx context.Context, u store.User, grant string) (authResponse, error) {
	orgs, err := s.store.UserOrgs(ctx, u.ID)
	if err != nil {
		return authResponse{}, err
	}
	p := store.Principal{UserID: u.ID, Roles: u.Roles, Orgs: orgs}
	access, refresh, err := s.issuePair(ctx, p)
	if err != nil {
		return authResponse{}, err
	}
	s.metrics.tokens.WithLabelValues(grant).Inc()
	return authResponse{UserID: u.ID, Username: u.Username, Email: u.Email, Roles: u.Roles, Token: access,
		TokenType: "Bearer", ExpiresIn: int64(s.cfg.TokenTTL / time.Second), RefreshToken: refresh}, nil
}

func (s *Service) me(w http.ResponseWriter, r *http.Request) error {
	p, err := s.principal(r, true)
	if err != nil {
		return err
	}
	u, err := s.store.UserByID(r.Context(), p.UserID)
	if errors.Is(err, store.ErrNotFound) {
		return notFound("user")
	} else if err != nil {
		return err
	}
	serve.WriteJSON(w, http.StatusOK, userJSON(u, p.Orgs))
	return nil
}

func userJSON(u store.User, orgs []string) map[string]any {
	return map[string]any{"userId": u.ID, "username": u.Username, "email": u.Email, "roles": u.Roles,
		"orgs": orgs, "createdAt": u.CreatedAt}
}

func (s *Service) grantRole(w http.ResponseWriter, r *http.Request) error {
	var in struct {
		Role string `json:"role"`
	}
	if err := decodeJSON(w, r, &in); err != nil {
		return err
	}
	return s.editRole(w, r, strings.ToUpper(strings.TrimSpace(in.Role)), s.store.GrantRole)
}

func (s *Service) revokeRole(w http.ResponseWriter, r *http.Request) error {
	return s.editRole(w, r, strings.ToUpper(r.PathValue("role")), s.store.RevokeRole)
}

func (s *Service) editRole(w http.ResponseWriter, r *http.Request, role string, edit func(context.Context, string, string) error) error {
	p, err := s.authority(r)
	if err != nil {
		return err
	}
	if !p.IsAdmin() {
		return forbiddenErr("role ADMIN required")
	}
	if !rolePattern.MatchString(role) {
		return badRequest("role: 2 to 32 upper-case letters, digits or '_'")
	}
	id := r.PathValue("id")
	if err := edit(r.Context(), id, role); errors.Is(err, store.ErrNotFound) {
		return notFound("user")
	} else if err != nil {
		return err
	}
	s.keys.ForgetUser(id)
	u, err := s.store.UserByID(r.Context(), id)
	if err != nil {
		return err
	}
	serve.WriteJSON(w, http.StatusOK, map[string]any{"userId": u.ID, "roles": u.Roles})
	return nil
}
