package keyring

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/leakytokens/leaky/authz/store"
)

func newTestRing(t *testing.T, s store.SigningKeyStore, secret string, now func() time.Time) *Ring {
	t.Helper()
	r, err := NewRing(s, secret, Options{RotateEvery: 24 * time.Hour, PublishDelay: time.Minute, RetainFor: time.Hour, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Refresh(context.Background()); err != nil {
		t.Fatalf("refresh() = %v", err)
	}
	return r
}

func TestKeyRingPersistsAndRotates(t *testing.T) {
	st := store.NewMemory()
	clock := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	now := func() time.Time { return clock }
	a := newTestRing(t, st, "secret", now)
	first := a.Set().signKID

	// A second replica (or a restart) reuses the stored key.
	b := newTestRing(t, st, "secret", now)
	if got := b.Set().signKID; got != first {
		t.Fatalf("second ring signs with %q, want the stored %q", got, first)
	}
	keys, _ := st.SigningKeys(context.Background())
	if len(keys) != 1 {
		t.Fatalf("stored keys = %d, want 1", len(keys))
	}

	// Past the rotation period a new key is made; it is published but signs
	// only after the publish delay, and the old one keeps verifying.
	clock = clock.Add(25 * time.Hour)
	if err := a.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := a.Set().signKID; got != first {
		t.Errorf("right after rotation signing kid = %q, want still %q", got, first)
	}
	if n := len(a.Set().verify); n != 2 {
		t.Errorf("verification keys = %d, want 2", n)
	}
	clock = clock.Add(2 * time.Minute)
	if err := a.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	second := a.Set().signKID
	if second == first {
		t.Error("after the publish delay the new key does not sign")
	}
	if _, ok := a.Set().verify[first]; !ok {
		t.Error("old key dropped before its retention ended")
	}
	clock = clock.Add(2 * time.Hour)
	if err := a.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, ok := a.Set().verify[first]; ok {
		t.Error("old key still verifies after its retention")
	}

	var doc struct {
		Keys []map[string]string `json:"keys"`
	}
	if err := json.Unmarshal(a.Set().jwks, &doc); err != nil {
		t.Fatal(err)
	}
	if len(doc.Keys) != 1 || doc.Keys[0]["kid"] != second || doc.Keys[0]["alg"] != "RS256" {
		t.Errorf("jwks = %s, want only %s", a.Set().jwks, second)
	}
	for _, k := range doc.Keys {
		for _, private := range []string{"d", "p", "q", "dp", "dq", "qi"} {
			if _, ok := k[private]; ok {
				t.Errorf("jwks publishes private member %q", private)
			}
		}
	}
}

func TestKeyRingWrongSecret(t *testing.T) {
	st := store.NewMemory()
	newTestRing(t, st, "right", time.Now)
	r, err := NewRing(st, "wrong", Options{RotateEvery: 24 * time.Hour, PublishDelay: time.Minute, RetainFor: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Refresh(context.Background()); err == nil {
		t.Error("refresh() with the wrong secret = nil, want an error")
	}
}

// A refresh that finds the same keys keeps the current set, so the JWT
// verification cache (keyed to the set) survives it; a change replaces it.
func TestKeyRingRefreshKeepsUnchangedSet(t *testing.T) {
	st := store.NewMemory()
	clock := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	r := newTestRing(t, st, "secret", func() time.Time { return clock })
	before := r.Set()
	clock = clock.Add(time.Second)
	if err := r.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	if r.Set() != before {
		t.Error("refresh with unchanged keys replaced the key set")
	}
	clock = clock.Add(25 * time.Hour) // due for rotation
	if err := r.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	if r.Set() == before {
		t.Error("refresh after a rotation kept the old key set")
	}

	// End to end: a verified token stays cached across an idle refresh.
	tok, _ := newTestTokens(t)
	raw, err := tok.Issue(Claims{RegisteredClaims: jwt.RegisteredClaims{Subject: "u"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tok.Verify(raw); err != nil {
		t.Fatal(err)
	}
	if err := tok.ring.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256([]byte(raw))
	tok.mu.RLock()
	v, ok := tok.cache[sum]
	tok.mu.RUnlock()
	if !ok || v.set != tok.ring.Set() {
		t.Error("verification cache entry no longer matches the key set after an idle refresh")
	}
}
