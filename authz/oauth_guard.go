package authz

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/url"
	"slices"

	"github.com/ory/fosite"

	"github.com/leakytokens/leaky/authz/store"
	"github.com/leakytokens/leaky/internal/serve"
)

// errFormTooLarge answers an OAuth2 request whose body exceeds
// maxBodyBytes: 413 with the RFC 6749 error body.
var errFormTooLarge = &fosite.RFC6749Error{ErrorField: "invalid_request",
	DescriptionField: "The request body is too large.", CodeField: http.StatusRequestEntityTooLarge}

// errOAuthStoreUnavailable answers an OAuth2 request the store could not
// serve: 503 temporarily_unavailable, never invalid_client or an inactive
// token, which would tell the client its credentials are wrong.
var errOAuthStoreUnavailable = fosite.ErrTemporarilyUnavailable.WithHint("The store is unavailable, retry later.")

// readForm reads an OAuth2 endpoint's form before fosite does, so that a
// body over maxBodyBytes is refused 413 (fosite reads 1 MB and then calls
// the form empty) and no form value or Basic credential that is not
// store.ValidText reaches a lookup. It returns the error to write, or nil.
func readForm(w http.ResponseWriter, r *http.Request) error {
	r.Body = http.MaxBytesReader(w, r.Body, maxBodyBytes)
	err := r.ParseForm() // ParseMultipartForm drops ParseForm's error on a form that is not multipart
	if err == nil {
		err = r.ParseMultipartForm(maxBodyBytes)
	}
	var tooBig *http.MaxBytesError
	switch {
	case errors.As(err, &tooBig):
		return errFormTooLarge
	case err != nil && !errors.Is(err, http.ErrNotMultipart):
		return fosite.ErrInvalidRequest.WithHint("The body is not a well-formed form.")
	}
	bad := fosite.ErrInvalidRequest.WithHint("Form values and client credentials must be UTF-8 text without NUL characters.")
	for k, vs := range r.Form {
		if !store.ValidText(k) || slices.ContainsFunc(vs, invalidText) {
			return bad
		}
	}
	if id, secret, ok := r.BasicAuth(); ok {
		for _, v := range []string{id, secret} {
			dec, err := url.QueryUnescape(v)
			if !store.ValidText(v) || err == nil && !store.ValidText(dec) {
				return bad
			}
		}
	}
	return nil
}

// oauthUnavailable reports whether err from fosite hides a store outage:
// fosite reports one as invalid_client, server_error or an inactive token
// with the store's error inside, or (revocation) as temporarily_unavailable
// without it.
func oauthUnavailable(err error) bool {
	return storeUnavailable(err) || errors.Is(err, fosite.ErrTemporarilyUnavailable)
}

// oauthError writes err from an OAuth2 endpoint in RFC 6749 form, turning
// a store outage (oauthUnavailable) into errOAuthStoreUnavailable with
// Retry-After, logged as a warning.
func (s *Service) oauthError(w http.ResponseWriter, r *http.Request, ar fosite.AccessRequester, err error) {
	if oauthUnavailable(err) {
		s.logger.LogAttrs(r.Context(), slog.LevelWarn, "oauth2: store unavailable",
			slog.String(serve.KeyRoute, r.Pattern), slog.String(serve.KeyError, err.Error()))
		w.Header().Set("Retry-After", "1")
		err = errOAuthStoreUnavailable
	}
	s.oauth.WriteAccessError(r.Context(), w, ar, err)
}

// mayIntrospect reports whether the confidential client callerID may read
// a token of the client tokenClient: its own tokens always; another
// client's, or a user's, only when the caller currently acts as ADMIN (a
// client created with ADMIN by an owner who still holds it, see
// clientPrincipal).
func (s *Service) mayIntrospect(ctx context.Context, callerID, tokenClient string) (bool, error) {
	if callerID == tokenClient {
		return true, nil
	}
	c, err := s.store.Client(ctx, callerID)
	if errors.Is(err, store.ErrNotFound) {
		return false, nil
	} else if err != nil {
		return false, err
	}
	p, err := s.clientPrincipal(ctx, c)
	if errors.Is(err, errClientRevoked) {
		return false, nil
	} else if err != nil {
		return false, err
	}
	return p.IsAdmin(), nil
}
