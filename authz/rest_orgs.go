package authz

import (
	"errors"
	"net/http"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/leakytokens/leaky/authz/store"
	"github.com/leakytokens/leaky/internal/serve"
)

func (s *Service) createOrg(w http.ResponseWriter, r *http.Request) error {
	p, err := s.principal(r, false)
	if err != nil {
		return err
	}
	var in struct {
		ID   string `json:"id"`
		Name string `json:"name"`
	}
	if err := decodeJSON(w, r, &in); err != nil {
		return err
	}
	in.ID, in.Name = strings.TrimSpace(in.ID), strings.TrimSpace(in.Name)
	if !store.ValidOrgID(in.ID) {
		return badRequest("id: 2 to 63 lower-case letters, digits or '-', starting with a letter or digit")
	}
	if in.Name == "" {
		in.Name = in.ID
	}
	if utf8.RuneCountInString(in.Name) > 200 || !store.ValidName(in.Name) {
		return badRequest("name: at most 200 characters, none of them control characters")
	}
	o := store.Org{ID: in.ID, Name: in.Name, CreatedAt: time.Now().UTC().Truncate(time.Microsecond)}
	if err := s.store.CreateOrg(r.Context(), o, p.UserID); errors.Is(err, store.ErrConflict) {
		return &apiError{http.StatusConflict, "conflict", "organisation id already taken"}
	} else if errors.Is(err, store.ErrNotFound) {
		return forbiddenErr("only users can create organisations")
	} else if err != nil {
		return err
	}
	s.keys.ForgetUser(p.UserID)
	serve.WriteJSON(w, http.StatusCreated, map[string]any{"id": o.ID, "name": o.Name, "createdAt": o.CreatedAt})
	return nil
}

// listOrgs lists the caller's organisations, read from the store (not the
// token, which may predate a change).
func (s *Service) listOrgs(w http.ResponseWriter, r *http.Request) error {
	p, err := s.principal(r, false)
	if err != nil {
		return err
	}
	ids, err := s.store.UserOrgs(r.Context(), p.UserID)
	if err != nil {
		return err
	}
	out := make([]map[string]any, 0, len(ids))
	for _, id := range ids {
		o, err := s.store.Org(r.Context(), id)
		if err != nil {
			continue
		}
		out = append(out, map[string]any{"id": o.ID, "name": o.Name, "createdAt": o.CreatedAt})
	}
	serve.WriteJSON(w, http.StatusOK, out)
	return nil
}

// orgAdmin checks the caller may manage org: an organisation admin or
// ADMIN. To anyone else who is not a member, the organisation does not
// exist (404); to a plain member management is forbidden (403).
func (s *Service) orgAdmin(r *http.Request, p store.Principal, org string) error {
	if _, err := s.store.Org(r.Context(), org); errors.Is(err, store.ErrNotFound) {
		return notFound("organisation")
	} else if err != nil {
		return err
	}
	if p.IsAdmin() {
		return nil
	}
	mems, err := s.store.Members(r.Context(), org)
	if err != nil {
		return err
	}
	i := slices.IndexFunc(mems, func(m store.Member) bool { return m.UserID == p.UserID })
	switch {
	case i < 0:
		return notFound("organisation")
	case !mems[i].Admin:
		return forbiddenErr("organisation admin required")
	}
	return nil
}

func (s *Service) listMembers(w http.ResponseWriter, r *http.Request) error {
	p, err := s.authority(r)
	if err != nil {
		return err
	}
	org := r.PathValue("org")
	if err := s.orgAdmin(r, p, org); err != nil {
		return err
	}
	mems, err := s.store.Members(r.Context(), org)
	if err != nil {
		return err
	}
	out := make([]map[string]any, 0, len(mems))
	for _, m := range mems {
		out = append(out, map[string]any{"orgId": m.OrgID, "userId": m.UserID, "admin": m.Admin})
	}
	serve.WriteJSON(w, http.StatusOK, out)
	return nil
}

func (s *Service) addMember(w http.ResponseWriter, r *http.Request) error {
	p, err := s.authority(r)
	if err != nil {
		return err
	}
	var in struct {
		UserID string `json:"userId"`
		Admin  bool   `json:"admin"`
	}
	if err := decodeJSON(w, r, &in); err != nil {
		return err
	}
	org := r.PathValue("org")
	if err := s.orgAdmin(r, p, org); err != nil {
		return err
	}
	m := store.Member{OrgID: org, UserID: strings.TrimSpace(in.UserID), Admin: in.Admin}
	if err := s.store.PutMember(r.Context(), m); errors.Is(err, store.ErrNotFound) {
		return notFound("user")
	} else if err != nil {
		return err
	}
	s.keys.ForgetUser(m.UserID)
	serve.WriteJSON(w, http.StatusCreated, map[string]any{"orgId": m.OrgID, "userId": m.UserID, "admin": m.Admin})
	return nil
}

func (s *Service) removeMember(w http.ResponseWriter, r *http.Request) error {
	p, err := s.authority(r)
	if err != nil {
		return err
	}
	org, user := r.PathValue("org"), r.PathValue("user")
	if err := s.orgAdmin(r, p, org); err != nil {
		return err
	}
	if err := s.store.RemoveMember(r.Context(), org, user); errors.Is(err, store.ErrNotFound) {
		return notFound("member")
	} else if err != nil {
		return err
	}
	s.keys.ForgetUser(user)
	w.WriteHeader(http.StatusNoContent)
	return nil
}
