// Package storetest is the contract every store.Store must meet. The memory
// store and authz/pgstore both run it:
//
//	storetest.Run(t, func(t *testing.T) store.Store { return open(t) })
package storetest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/leakytokens/leaky/authz/apikey"
	"github.com/leakytokens/leaky/authz/store"
)

// Run runs every contract test; open returns a fresh, empty store for t.
func Run(t *testing.T, open func(t *testing.T) store.Store) {
	tests := []struct {
		name string
		f    func(*testing.T, store.Store)
	}{
		{"Users", testUsers},
		{"Roles", testRoles},
		{"APIKeys", testAPIKeys},
		{"Orgs", testOrgs},
		{"Clients", testClients},
		{"ClientLimit", testClientLimit},
		{"SigningKeys", testSigningKeys},
		{"Tokens", testTokens},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { tt.f(t, open(t)) })
	}
}

// now is a fixed instant at microsecond precision, the finest PostgreSQL keeps.
var now = time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)

func user(n int) store.User {
	return store.User{
		ID:           fmt.Sprintf("00000000-0000-4000-8000-%012d", n),
		Username:     fmt.Sprintf("user%d", n),
		Email:        fmt.Sprintf("user%d@example.com", n),
		PasswordHash: "$argon2id$v=19$m=64,t=1,p=1$c2FsdA$aGFzaA",
		Roles:        []string{store.RoleUser},
		CreatedAt:    now,
	}
}

func mustCreate(t *testing.T, s store.Store, users ...store.User) {
	t.Helper()
	for _, u := range users {
		if err := s.CreateUser(context.Background(), u); err != nil {
			t.Fatalf("CreateUser(%s) = %v", u.Username, err)
		}
	}
}

func wantErr(t *testing.T, what string, got, want error) {
	t.Helper()
	if !errors.Is(got, want) {
		t.Errorf("%s = %v, want %v", what, got, want)
	}
}

var timeEq = cmpopts.EquateApproxTime(time.Microsecond)

func testUsers(t *testing.T, s store.Store) {
	ctx := context.Background()
	u := user(1)
	mustCreate(t, s, u)
	got, err := s.UserByID(ctx, u.ID)
	if err != nil {
		t.Fatalf("UserByID = %v", err)
	}
	if d := cmp.Diff(u, got, timeEq); d != "" {
		t.Errorf("UserByID mismatch (-want +got):\n%s", d)
	}
	got, err = s.UserByUsername(ctx, "USER1")
	if err != nil || got.ID != u.ID {
		t.Errorf("UserByUsername(USER1) = %v, %v, want %s", got.ID, err, u.ID)
	}
	dupName, dupEmail := user(2), user(3)
	dupName.Username = "User1"
	dupEmail.Email = "USER1@example.com"
	wantErr(t, "CreateUser(same username)", s.CreateUser(ctx, dupName), store.ErrConflict)
	wantErr(t, "CreateUser(same email)", s.CreateUser(ctx, dupEmail), store.ErrConflict)
	_, err = s.UserByID(ctx, user(9).ID)
	wantErr(t, "UserByID(missing)", err, store.ErrNotFound)
	_, err = s.UserByUsername(ctx, "nobody")
	wantErr(t, "UserByUsername(missing)", err, store.ErrNotFound)
}

func testRoles(t *testing.T, s store.Store) {
	ctx := context.Background()
	u := user(1)
	mustCreate(t, s, u)
	for _, r := range []string{"ADMIN", "PRO", "ADMIN"} {
		if err := s.GrantRole(ctx, u.ID, r); err != nil {
			t.Fatalf("GrantRole(%s) = %v", r, err)
		}
	}
	if err := s.RevokeRole(ctx, u.ID, "PRO"); err != nil {
		t.Fatalf("RevokeRole = %v", err)
	}
	got, _ := s.UserByID(ctx, u.ID)
	if d := cmp.Diff([]string{"ADMIN", "USER"}, got.Roles); d != "" {
		t.Errorf("roles after grant/revoke (-want +got):\n%s", d)
	}
	wantErr(t, "GrantRole(missing user)", s.GrantRole(ctx, user(9).ID, "X"), store.ErrNotFound)
}

func testAPIKeys(t *testing.T, s store.Store) {
	ctx := context.Background()
	a, b := user(1), user(2)
	mustCreate(t, s, a, b)
	k1, _ := apikey.New()
	k2, _ := apikey.New()
	rec1 := store.APIKey{ID: k1.ID(), UserID: a.ID, Name: "one", Digest: k1.Digest(), CreatedAt: now, ExpiresAt: now.Add(time.Hour)}
	rec2 := store.APIKey{ID: k2.ID(), UserID: a.ID, Name: "two", Digest: k2.Digest(), CreatedAt: now.Add(time.Second)}
	for _, k := range []store.APIKey{rec1, rec2} {
		if err := s.CreateAPIKey(ctx, k); err != nil {
			t.Fatalf("CreateAPIKey = %v", err)
		}
	}
	wantErr(t, "CreateAPIKey(same id)", s.CreateAPIKey(ctx, rec1), store.ErrConflict)
	got, err := s.APIKeyByID(ctx, k1.ID())
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(rec1, got, timeEq); d != "" {
		t.Errorf("APIKeyByID (-want +got):\n%s", d)
	}
	list, _ := s.APIKeys(ctx, a.ID)
	if d := cmp.Diff([]store.APIKey{rec1, rec2}, list, timeEq); d != "" {
		t.Errorf("APIKeys(a) (-want +got):\n%s", d)
	}
	if list, _ := s.APIKeys(ctx, b.ID); len(list) != 0 {
		t.Errorf("APIKeys(b) = %d keys, want 0", len(list))
	}
	wantErr(t, "DeleteAPIKey(b, a's key)", s.DeleteAPIKey(ctx, b.ID, k1.ID()), store.ErrNotFound)
	if err := s.DeleteAPIKey(ctx, a.ID, k1.ID()); err != nil {
		t.Fatalf("DeleteAPIKey(owner) = %v", err)
	}
	_, err = s.APIKeyByID(ctx, k1.ID())
	wantErr(t, "APIKeyByID(deleted)", err, store.ErrNotFound)
	wantErr(t, "DeleteAPIKey(again)", s.DeleteAPIKey(ctx, a.ID, k1.ID()), store.ErrNotFound)
}

func testOrgs(t *testing.T, s store.Store) {
	ctx := context.Background()
	a, b, c := user(1), user(2), user(3)
	mustCreate(t, s, a, b, c)
	org := store.Org{ID: "acme", Name: "Acme", CreatedAt: now}
	if err := s.CreateOrg(ctx, org, a.ID); err != nil {
		t.Fatalf("CreateOrg = %v", err)
	}
	wantErr(t, "CreateOrg(same id)", s.CreateOrg(ctx, org, b.ID), store.ErrConflict)
	got, err := s.Org(ctx, "acme")
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(org, got, timeEq); d != "" {
		t.Errorf("Org (-want +got):\n%s", d)
	}
	if err := s.PutMember(ctx, store.Member{OrgID: "acme", UserID: b.ID}); err != nil {
		t.Fatalf("PutMember = %v", err)
	}
	if err := s.PutMember(ctx, store.Member{OrgID: "acme", UserID: b.ID, Admin: true}); err != nil {
		t.Fatalf("PutMember(update) = %v", err)
	}
	wantErr(t, "PutMember(missing org)", s.PutMember(ctx, store.Member{OrgID: "nope", UserID: b.ID}), store.ErrNotFound)
	wantErr(t, "PutMember(missing user)", s.PutMember(ctx, store.Member{OrgID: "acme", UserID: user(9).ID}), store.ErrNotFound)
	mems, _ := s.Members(ctx, "acme")
	want := []store.Member{{OrgID: "acme", UserID: a.ID, Admin: true}, {OrgID: "acme", UserID: b.ID, Admin: true}}
	if d := cmp.Diff(want, mems); d != "" {
		t.Errorf("Members (-want +got):\n%s", d)
	}
	orgs, _ := s.UserOrgs(ctx, b.ID)
	if d := cmp.Diff([]string{"acme"}, orgs); d != "" {
		t.Errorf("UserOrgs(b) (-want +got):\n%s", d)
	}
	if orgs, _ := s.UserOrgs(ctx, c.ID); len(orgs) != 0 {
		t.Errorf("UserOrgs(c) = %v, want none", orgs)
	}
	if err := s.RemoveMember(ctx, "acme", b.ID); err != nil {
		t.Fatalf("RemoveMember = %v", err)
	}
	wantErr(t, "RemoveMember(again)", s.RemoveMember(ctx, "acme", b.ID), store.ErrNotFound)
	_, err = s.Members(ctx, "nope")
	wantErr(t, "Members(missing)", err, store.ErrNotFound)
}

func testClients(t *testing.T, s store.Store) {
	ctx := context.Background()
	a := user(1)
	mustCreate(t, s, a)
	c := store.Client{ID: "svc_1", SecretDigest: []byte("0123456789abcdef0123456789abcdef"), OwnerID: a.ID, Roles: []string{"USER"}, CreatedAt: now}
	if err := s.CreateClient(ctx, c, 10); err != nil {
		t.Fatalf("CreateClient = %v", err)
	}
	wantErr(t, "CreateClient(same id)", s.CreateClient(ctx, c, 10), store.ErrConflict)
	got, err := s.Client(ctx, "svc_1")
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(c, got, timeEq); d != "" {
		t.Errorf("Client (-want +got):\n%s", d)
	}
	_, err = s.Client(ctx, "svc_2")
	wantErr(t, "Client(missing)", err, store.ErrNotFound)

	// Owner and organisation must exist, as PostgreSQL's foreign keys say.
	noOwner := c
	noOwner.ID, noOwner.OwnerID = "svc_3", "no-such-user"
	wantErr(t, "CreateClient(missing owner)", s.CreateClient(ctx, noOwner, 10), store.ErrNotFound)
	noOrg := c
	noOrg.ID, noOrg.OrgID = "svc_4", "no-such-org"
	wantErr(t, "CreateClient(missing org)", s.CreateClient(ctx, noOrg, 10), store.ErrNotFound)
	if err := s.CreateOrg(ctx, store.Org{ID: "client-org", Name: "Client org", CreatedAt: now}, a.ID); err != nil {
		t.Fatal(err)
	}
	withOrg := c
	withOrg.ID, withOrg.OrgID = "svc_5", "client-org"
	if err := s.CreateClient(ctx, withOrg, 10); err != nil {
		t.Errorf("CreateClient(existing org) = %v", err)
	}
	for _, id := range []string{"svc_3", "svc_4"} {
		_, err = s.Client(ctx, id)
		wantErr(t, "Client("+id+") after a refused create", err, store.ErrNotFound)
	}
}

// testClientLimit: CreateClient refuses the owner's client beyond the
// bound with ErrLimit, counts only that owner's clients, and holds to the
// bound under concurrent creations.
func testClientLimit(t *testing.T, s store.Store) {
	ctx := context.Background()
	a, b := user(1), user(2)
	mustCreate(t, s, a)
	mustCreate(t, s, b)
	mk := func(id, owner string) store.Client {
		return store.Client{ID: id, SecretDigest: []byte("0123456789abcdef0123456789abcdef"), OwnerID: owner, Roles: []string{"USER"}, CreatedAt: now}
	}
	for i := range 2 {
		if err := s.CreateClient(ctx, mk(fmt.Sprintf("svc_a%d", i), a.ID), 2); err != nil {
			t.Fatalf("CreateClient(%d of 2) = %v", i+1, err)
		}
	}
	wantErr(t, "CreateClient(third of 2)", s.CreateClient(ctx, mk("svc_a2", a.ID), 2), store.ErrLimit)
	_, err := s.Client(ctx, "svc_a2")
	wantErr(t, "Client(refused by the limit)", err, store.ErrNotFound)
	if err := s.CreateClient(ctx, mk("svc_a2", a.ID), 3); err != nil {
		t.Errorf("CreateClient(third of 3) = %v", err)
	}

	// b's clients, created concurrently, stop at the bound exactly.
	const tries, bound = 16, 5
	var wg sync.WaitGroup
	errs := make([]error, tries)
	for i := range tries {
		wg.Go(func() { errs[i] = s.CreateClient(ctx, mk(fmt.Sprintf("svc_b%d", i), b.ID), bound) })
	}
	wg.Wait()
	created := 0
	for i, err := range errs {
		switch {
		case err == nil:
			created++
		case !errors.Is(err, store.ErrLimit):
			t.Errorf("concurrent CreateClient %d = %v, want nil or ErrLimit", i, err)
		}
	}
	if created != bound {
		t.Errorf("concurrent CreateClient with bound %d created %d clients", bound, created)
	}
}

func testSigningKeys(t *testing.T, s store.Store) {
	ctx := context.Background()
	k1 := store.SigningKey{KID: "k1", Sealed: []byte{1, 2, 3}, CreatedAt: now}
	k2 := store.SigningKey{KID: "k2", Sealed: []byte{4}, CreatedAt: now.Add(time.Hour)}
	for _, k := range []store.SigningKey{k1, k2} {
		if err := s.CreateSigningKey(ctx, k); err != nil {
			t.Fatalf("CreateSigningKey = %v", err)
		}
	}
	wantErr(t, "CreateSigningKey(same kid)", s.CreateSigningKey(ctx, k1), store.ErrConflict)
	got, _ := s.SigningKeys(ctx)
	if d := cmp.Diff([]store.SigningKey{k1, k2}, got, timeEq); d != "" {
		t.Errorf("SigningKeys (-want +got):\n%s", d)
	}
}

func testTokens(t *testing.T, s store.Store) {
	ctx := context.Background()
	mk := func(kind store.TokenKind, sig, req string) store.TokenSession {
		return store.TokenSession{Kind: kind, Signature: sig, RequestID: req, Active: true, Data: []byte(`{}`), ExpiresAt: now}
	}
	toks := []store.TokenSession{
		mk(store.RefreshToken, "r1", "fam"), mk(store.RefreshToken, "r2", "fam"),
		mk(store.AccessToken, "a1", "fam"), mk(store.RefreshToken, "r3", "other"),
	}
	for _, tok := range toks {
		if err := s.CreateToken(ctx, tok); err != nil {
			t.Fatalf("CreateToken = %v", err)
		}
	}
	wantErr(t, "CreateToken(same signature)", s.CreateToken(ctx, toks[0]), store.ErrConflict)
	if err := s.DeactivateTokens(ctx, store.RefreshToken, "fam"); err != nil {
		t.Fatal(err)
	}
	if err := s.DeactivateTokens(ctx, store.RefreshToken, "none"); err != nil {
		t.Errorf("DeactivateTokens(no family) = %v, want nil", err)
	}
	for sig, want := range map[string]bool{"r1": false, "r2": false, "r3": true} {
		got, err := s.Token(ctx, store.RefreshToken, sig)
		if err != nil || got.Active != want {
			t.Errorf("Token(%s).Active = %v, %v, want %v", sig, got.Active, err, want)
		}
	}
	got, err := s.Token(ctx, store.AccessToken, "a1")
	if err != nil || !got.Active {
		t.Errorf("Token(a1) = %+v, %v, want active", got, err)
	}
	if d := cmp.Diff(toks[2], got, timeEq); d != "" {
		t.Errorf("Token(a1) (-want +got):\n%s", d)
	}
	if err := s.ConsumeToken(ctx, store.RefreshToken, "r3"); err != nil {
		t.Errorf("ConsumeToken(active) = %v, want nil", err)
	}
	wantErr(t, "ConsumeToken(inactive)", s.ConsumeToken(ctx, store.RefreshToken, "r3"), store.ErrNotFound)
	wantErr(t, "ConsumeToken(missing)", s.ConsumeToken(ctx, store.RefreshToken, "zz"), store.ErrNotFound)
	errs := make(chan error, 8)
	if err := s.CreateToken(ctx, mk(store.RefreshToken, "race", "race")); err != nil {
		t.Fatal(err)
	}
	for range 8 {
		go func() { errs <- s.ConsumeToken(ctx, store.RefreshToken, "race") }()
	}
	wins := 0
	for range 8 {
		if <-errs == nil {
			wins++
		}
	}
	if wins != 1 {
		t.Errorf("8 concurrent ConsumeToken calls: %d succeeded, want 1", wins)
	}
	if err := s.DeleteToken(ctx, store.AccessToken, "a1"); err != nil {
		t.Fatal(err)
	}
	_, err = s.Token(ctx, store.AccessToken, "a1")
	wantErr(t, "Token(deleted)", err, store.ErrNotFound)

	old := mk(store.RefreshToken, "old", "fam2")
	old.ExpiresAt = now.Add(-time.Hour)
	if err := s.CreateToken(ctx, old); err != nil {
		t.Fatal(err)
	}
	n, err := s.PurgeTokens(ctx, now.Add(-time.Minute))
	if err != nil || n != 1 {
		t.Errorf("PurgeTokens = %d, %v, want 1", n, err)
	}
	_, err = s.Token(ctx, store.RefreshToken, "old")
	wantErr(t, "Token(purged)", err, store.ErrNotFound)
	if _, err := s.Token(ctx, store.RefreshToken, "r1"); err != nil {
		t.Errorf("Token(r1) after purge = %v, want it kept", err)
	}
}
