package store

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"
)

// Memory is the embedded Store: everything in maps behind one mutex,
// lost at exit. Safe for concurrent use. Records are copied in and out.
type Memory struct {
	mu       sync.RWMutex
	users    map[string]User   // by id
	byName   map[string]string // lower-case username → id
	byEmail  map[string]string // lower-case email → id
	keys     map[string]APIKey // by id
	orgs     map[string]Org
	members  map[string]map[string]Member // org → user → member
	clients  map[string]Client
	signing  []SigningKey
	tokens   map[string]TokenSession // kind + "/" + signature
	families map[string][]string     // kind + "/" + request id → token map keys
}

var _ Store = (*Memory)(nil)

// NewMemory returns an empty store.
func NewMemory() *Memory {
	return &Memory{
		users: map[string]User{}, byName: map[string]string{}, byEmail: map[string]string{},
		keys: map[string]APIKey{}, orgs: map[string]Org{}, members: map[string]map[string]Member{},
		clients: map[string]Client{}, tokens: map[string]TokenSession{}, families: map[string][]string{},
	}
}

// Ping always succeeds.
func (m *Memory) Ping(context.Context) error { return nil }

// Close does nothing.
func (m *Memory) Close() {}

func (m *Memory) CreateUser(_ context.Context, u User) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	name, email := strings.ToLower(u.Username), strings.ToLower(u.Email)
	if _, ok := m.users[u.ID]; ok {
		return fmt.Errorf("user id: %w", ErrConflict)
	}
	if _, ok := m.byName[name]; ok {
		return fmt.Errorf("username: %w", ErrConflict)
	}
	if _, ok := m.byEmail[email]; ok {
		return fmt.Errorf("email: %w", ErrConflict)
	}
	u.Roles = NormRoles(u.Roles)
	m.users[u.ID] = u
	m.byName[name], m.byEmail[email] = u.ID, u.ID
	return nil
}

func (m *Memory) UserByID(_ context.Context, id string) (User, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	u, ok := m.users[id]
	if !ok {
		return User{}, fmt.Errorf("user: %w", ErrNotFound)
	}
	u.Roles = slices.Clone(u.Roles)
	return u, nil
}

func (m *Memory) UserByUsername(ctx context.Context, username string) (User, error) {
	m.mu.RLock()
	id, ok := m.byName[strings.ToLower(username)]
	m.mu.RUnlock()
	if !ok {
		return User{}, fmt.Errorf("user: %w", ErrNotFound)
	}
	return m.UserByID(ctx, id)
}

func (m *Memory) GrantRole(_ context.Context, userID, role string) error {
	return m.editRoles(userID, func(r []string) []string { return append(r, role) })
}

func (m *Memory) RevokeRole(_ context.Context, userID, role string) error {
	role = strings.ToUpper(role)
	return m.editRoles(userID, func(r []string) []string {
		return slices.DeleteFunc(r, func(s string) bool { return s == role })
	})
}

func (m *Memory) editRoles(userID string, f func([]string) []string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	u, ok := m.users[userID]
	if !ok {
		return fmt.Errorf("user: %w", ErrNotFound)
	}
	u.Roles = NormRoles(f(slices.Clone(u.Roles)))
	m.users[userID] = u
	return nil
}

// NormRoles upper-cases, sorts and de-duplicates roles.
func NormRoles(roles []string) []string {
	out := make([]string, 0, len(roles))
	for _, r := range roles {
		out = append(out, strings.ToUpper(r))
	}
	slices.Sort(out)
	return slices.Compact(out)
}

func (m *Memory) CreateAPIKey(_ context.Context, k APIKey) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.users[k.UserID]; !ok {
		return fmt.Errorf("api key owner: %w", ErrNotFound)
	}
	if _, ok := m.keys[k.ID]; ok {
		return fmt.Errorf("api key: %w", ErrConflict)
	}
	m.keys[k.ID] = k
	return nil
}

func (m *Memory) APIKeyByID(_ context.Context, id string) (APIKey, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	k, ok := m.keys[id]
	if !ok {
		return APIKey{}, fmt.Errorf("api key: %w", ErrNotFound)
	}
	return k, nil
}

func (m *Memory) APIKeys(_ context.Context, userID string) ([]APIKey, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	out := []APIKey{}
	for _, k := range m.keys {
		if k.UserID == userID {
			out = append(out, k)
		}
	}
	slices.SortFunc(out, func(a, b APIKey) int {
		return cmp.Or(a.CreatedAt.Compare(b.CreatedAt), cmp.Compare(a.ID, b.ID))
	})
	return out, nil
}

func (m *Memory) DeleteAPIKey(_ context.Context, userID, id string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	k, ok := m.keys[id]
	if !ok || k.UserID != userID {
		return fmt.Errorf("api key: %w", ErrNotFound)
	}
	delete(m.keys, id)
	return nil
}

func (m *Memory) CreateOrg(_ context.Context, o Org, admin string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.orgs[o.ID]; ok {
		return fmt.Errorf("organisation: %w", ErrConflict)
	}
	if _, ok := m.users[admin]; !ok {
		return fmt.Errorf("organisation admin: %w", ErrNotFound)
	}
	m.orgs[o.ID] = o
	m.members[o.ID] = map[string]Member{admin: {OrgID: o.ID, UserID: admin, Admin: true}}
	return nil
}

func (m *Memory) Org(_ context.Context, id string) (Org, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	o, ok := m.orgs[id]
	if !ok {
		return Org{}, fmt.Errorf("organisation: %w", ErrNotFound)
	}
	return o, nil
}

func (m *Memory) PutMember(_ context.Context, mem Member) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.orgs[mem.OrgID]; !ok {
		return fmt.Errorf("organisation: %w", ErrNotFound)
	}
	if _, ok := m.users[mem.UserID]; !ok {
		return fmt.Errorf("user: %w", ErrNotFound)
	}
	m.members[mem.OrgID][mem.UserID] = mem
	return nil
}

func (m *Memory) RemoveMember(_ context.Context, orgID, userID string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.members[orgID][userID]; !ok {
		return fmt.Errorf("member: %w", ErrNotFound)
	}
	delete(m.members[orgID], userID)
	return nil
}

func (m *Memory) Members(_ context.Context, orgID string) ([]Member, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if _, ok := m.orgs[orgID]; !ok {
		return nil, fmt.Errorf("organisation: %w", ErrNotFound)
	}
	out := []Member{}
	for _, mem := range m.members[orgID] {
		out = append(out, mem)
	}
	slices.SortFunc(out, func(a, b Member) int { return cmp.Compare(a.UserID, b.UserID) })
	return out, nil
}

func (m *Memory) UserOrgs(_ context.Context, userID string) ([]string, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	out := []string{}
	for org, mems := range m.members {
		if _, ok := mems[userID]; ok {
			out = append(out, org)
		}
	}
	slices.Sort(out)
	return out, nil
}

func (m *Memory) CreateClient(_ context.Context, c Client, maxPerOwner int) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.clients[c.ID]; ok {
		return fmt.Errorf("client: %w", ErrConflict)
	}
	if _, ok := m.users[c.OwnerID]; !ok {
		return fmt.Errorf("client owner: %w", ErrNotFound)
	}
	if _, ok := m.orgs[c.OrgID]; c.OrgID != "" && !ok {
		return fmt.Errorf("client organisation: %w", ErrNotFound)
	}
	owned := 0
	for _, other := range m.clients {
		if other.OwnerID == c.OwnerID {
			owned++
		}
	}
	if owned >= maxPerOwner {
		return fmt.Errorf("clients of %s: %w", c.OwnerID, ErrLimit)
	}
	c.Roles = NormRoles(c.Roles)
	m.clients[c.ID] = c
	return nil
}

func (m *Memory) Client(_ context.Context, id string) (Client, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	c, ok := m.clients[id]
	if !ok {
		return Client{}, fmt.Errorf("client: %w", ErrNotFound)
	}
	c.Roles = slices.Clone(c.Roles)
	return c, nil
}

func (m *Memory) CreateSigningKey(_ context.Context, k SigningKey) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if slices.ContainsFunc(m.signing, func(s SigningKey) bool { return s.KID == k.KID }) {
		return fmt.Errorf("signing key: %w", ErrConflict)
	}
	m.signing = append(m.signing, k)
	return nil
}

func (m *Memory) SigningKeys(context.Context) ([]SigningKey, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return slices.Clone(m.signing), nil
}

func (m *Memory) CreateToken(_ context.Context, t TokenSession) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	k := string(t.Kind) + "/" + t.Signature
	if _, ok := m.tokens[k]; ok {
		return fmt.Errorf("token: %w", ErrConflict)
	}
	m.tokens[k] = t
	fk := string(t.Kind) + "/" + t.RequestID
	m.families[fk] = append(m.families[fk], k)
	return nil
}

func (m *Memory) Token(_ context.Context, kind TokenKind, signature string) (TokenSession, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	t, ok := m.tokens[string(kind)+"/"+signature]
	if !ok {
		return TokenSession{}, fmt.Errorf("token: %w", ErrNotFound)
	}
	return t, nil
}

func (m *Memory) DeleteToken(_ context.Context, kind TokenKind, signature string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.tokens, string(kind)+"/"+signature)
	return nil
}

func (m *Memory) DeactivateTokens(_ context.Context, kind TokenKind, requestID string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, k := range m.families[string(kind)+"/"+requestID] {
		if t, ok := m.tokens[k]; ok {
			t.Active = false
			m.tokens[k] = t
		}
	}
	return nil
}

func (m *Memory) ConsumeToken(_ context.Context, kind TokenKind, signature string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	k := string(kind) + "/" + signature
	t, ok := m.tokens[k]
	if !ok || !t.Active {
		return fmt.Errorf("active token: %w", ErrNotFound)
	}
	t.Active = false
	m.tokens[k] = t
	return nil
}

func (m *Memory) PurgeTokens(_ context.Context, before time.Time) (int64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var n int64
	for k, t := range m.tokens {
		if t.ExpiresAt.Before(before) {
			delete(m.tokens, k)
			n++
		}
	}
	for fk, keys := range m.families {
		keys = slices.DeleteFunc(keys, func(k string) bool { _, ok := m.tokens[k]; return !ok })
		if len(keys) == 0 {
			delete(m.families, fk)
		} else {
			m.families[fk] = keys
		}
	}
	return n, nil
}
