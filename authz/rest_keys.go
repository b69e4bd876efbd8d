package authz

import (
	"errors"
	"net/http"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/leakytokens/leaky/authz/apikey"
	"github.com/leakytokens/leaky/authz/keyauth"
	"github.com/leakytokens/leaky/authz/store"
	"github.com/leakytokens/leaky/internal/contract"
	"github.com/leakytokens/leaky/internal/serve"
)

// keyJSON is an API key as the API shows it; APIKey (the secret) only in
// the create response.
type keyJSON struct {
	ID        string     `json:"id"`
	UserID    string     `json:"userId"`
	Name      string     `json:"name"`
	CreatedAt time.Time  `json:"createdAt"`
	ExpiresAt *time.Time `json:"expiresAt"`
	APIKey    string     `json:"apiKey,omitempty"`
}

func toKeyJSON(k store.APIKey) keyJSON {
	out := keyJSON{ID: k.ID, UserID: k.UserID, Name: k.Name, CreatedAt: k.CreatedAt}
	if !k.ExpiresAt.IsZero() {
		e := k.ExpiresAt
		out.ExpiresAt = &e
	}
	return out
}

// owner resolves the user a key request is about: the userId given (only
// the caller itself unless ADMIN) or the caller.
func owner(p store.Principal, userID string) (string, error) {
	userID = strings.TrimSpace(userID)
	if userID == "" || userID == p.UserID {
		return p.UserID, nil
	}
	if !p.IsAdmin() {
		return "", forbiddenErr("only ADMIN may manage another user's api keys")
	}
	return userID, nil
}

func (s *Service) createKey(w http.ResponseWriter, r *http.Request) error {
	p, err := s.authority(r)
	if err != nil {
		return err
	}
	var in struct {
		UserID    string     `json:"userId"`
		Name      string     `json:"name"`
		ExpiresAt *time.Time `json:"expiresAt"`
	}
	if err := decodeJSON(w, r, &in); err != nil {
		return err
	}
	uid, err := owner(p, in.UserID)
	if err != nil {
		return err
	}
	now := time.Now().UTC().Truncate(time.Microsecond)
	in.Name = strings.TrimSpace(in.Name)
	if utf8.RuneCountInString(in.Name) > 100 || !store.ValidName(in.Name) {
		return badRequest("name: at most 100 characters, none of them control characters")
	}
	rec := store.APIKey{UserID: uid, Name: in.Name, CreatedAt: now}
	if in.ExpiresAt != nil {
		if !in.ExpiresAt.After(now) {
			return badRequest("expiresAt: must be in the future")
		}
		rec.ExpiresAt = in.ExpiresAt.UTC().Truncate(time.Microsecond)
	}
	key, err := apikey.New()
	if err != nil {
		return err
	}
	rec.ID, rec.Digest = key.ID(), key.Digest()
	if err := s.store.CreateAPIKey(r.Context(), rec); errors.Is(err, store.ErrNotFound) {
		return notFound("user")
	} else if err != nil {
		return err
	}
	out := toKeyJSON(rec)
	out.APIKey = key.String()
	serve.WriteJSON(w, http.StatusCreated, out)
	return nil
}

func (s *Service) listKeys(w http.ResponseWriter, r *http.Request) error {
	p, err := s.authority(r)
	if err != nil {
		return err
	}
	uid, err := owner(p, r.URL.Query().Get("userId"))
	if err != nil {
		return err
	}
	keys, err := s.store.APIKeys(r.Context(), uid)
	if err != nil {
		return err
	}
	out := make([]keyJSON, 0, len(keys))
	for _, k := range keys {
		out = append(out, toKeyJSON(k))
	}
	serve.WriteJSON(w, http.StatusOK, out)
	return nil
}

// revokeKey serves DELETE /api-keys/{id} and the seed's
// DELETE /api-keys?userId=&apiKeyId=. A key the caller may not manage is
// reported as not found.
func (s *Service) revokeKey(w http.ResponseWriter, r *http.Request) error {
	p, err := s.authority(r)
	if err != nil {
		return err
	}
	id := r.PathValue("id")
	if id == "" {
		id = r.URL.Query().Get("apiKeyId")
	}
	if !apikey.ValidID(id) {
		return badRequest("apiKeyId: not an api key id")
	}
	uid, err := owner(p, r.URL.Query().Get("userId"))
	if err != nil {
		return err
	}
	if p.IsAdmin() && r.URL.Query().Get("userId") == "" {
		if k, err := s.store.APIKeyByID(r.Context(), id); err == nil {
			uid = k.UserID
		}
	}
	if err := s.store.DeleteAPIKey(r.Context(), uid, id); errors.Is(err, store.ErrNotFound) {
		return notFound("api key")
	} else if err != nil {
		return err
	}
	s.keys.Forget(id)
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// validateKey answers whether the X-Api-Key is valid; the caller (Bearer
// JWT) must own it or be ADMIN, so it is no oracle for strangers.
func (s *Service) validateKey(w http.ResponseWriter, r *http.Request) error {
	p, err := s.authority(r)
	if err != nil {
		return err
	}
	raw := r.Header.Get(contract.HeaderAPIKey)
	if raw == "" {
		return badRequest("X-Api-Key header required")
	}
	invalid := &apiError{http.StatusUnauthorized, "invalid_api_key", "invalid or expired api key"}
	owner, _, err := s.keys.Verify(r.Context(), raw)
	switch {
	case errors.Is(err, keyauth.ErrInvalid), errors.Is(err, keyauth.ErrExpired):
		return invalid
	case err != nil:
		return err
	case owner.UserID != p.UserID && !p.IsAdmin():
		return invalid
	}
	key, _ := apikey.Parse(raw)
	rec, err := s.store.APIKeyByID(r.Context(), key.ID())
	if err != nil {
		return invalid
	}
	out := toKeyJSON(rec)
	serve.WriteJSON(w, http.StatusOK, map[string]any{"id": out.ID, "userId": out.UserID, "name": out.Name,
		"expiresAt": out.ExpiresAt, "roles": owner.Roles})
	return nil
}
