package authz

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"

	"github.com/leakytokens/leaky/authz/apikey"
	"github.com/leakytokens/leaky/authz/store"
)

// API key verification outcomes Check turns into answers.
var (
	errKeyInvalid = errors.New("invalid api key")
	errKeyExpired = errors.New("api key expired")
	// errStore wraps a store failure or timeout: the answer is the
	// configured failure mode, not a 401.
	errStore = errors.New("store unavailable")
)

// keyLookup is what API key verification reads from the store.
type keyLookup interface {
	APIKeyByID(ctx context.Context, id string) (store.APIKey, error)
	UserByID(ctx context.Context, id string) (store.User, error)
	UserOrgs(ctx context.Context, userID string) ([]string, error)
}

// keyVerifier verifies API keys and caches the outcome, good or bad, by
// the key's digest (never the key) for ttl. Valid keys and refusals live in
// separate caches: anyone can mint unknown keys with valid checksums, and
// filling the refusal cache with them (bounded by negSize, a tenth of size)
// never evicts a valid key. A malformed key or bad checksum is refused
// before any lookup. Concurrent misses for one key share one lookup. Safe
// for concurrent use.
type keyVerifier struct {
	st      keyLookup
	ttl     time.Duration
	size    int
	timeout time.Duration
	now     func() time.Time
	group   singleflight.Group

	mu      sync.RWMutex
	entries map[apikey.Digest]keyEntry  // valid keys
	neg     map[apikey.Digest]time.Time // refused keys → cache expiry
	negSize int
}

type keyEntry struct {
	keyID      string
	principal  store.Principal
	valid      bool
	keyExpires time.Time // zero: never
	until      time.Time // cache expiry
}

func newKeyVerifier(st keyLookup, ttl time.Duration, size int, timeout time.Duration, now func() time.Time) *keyVerifier {
	return &keyVerifier{st: st, ttl: ttl, size: size, timeout: timeout, now: now,
		entries: map[apikey.Digest]keyEntry{}, neg: map[apikey.Digest]time.Time{}, negSize: max(1, size/10)}
}

// How verify reached its answer, for the cache metric.
const (
	keyHit       = "hit"       // from the cache
	keyMiss      = "miss"      // from the store
	keyMalformed = "malformed" // refused without a lookup
)

// verify returns the key's owner, or errKeyInvalid, errKeyExpired, or an
// error wrapping errStore, and how it got there (keyHit, keyMiss,
// keyMalformed).
func (v *keyVerifier) verify(ctx context.Context, raw string) (p store.Principal, how string, err error) {
	key, err := apikey.Parse(raw)
	if err != nil {
		return store.Principal{}, keyMalformed, errKeyInvalid
	}
	d := key.Digest()
	now := v.now()
	v.mu.RLock()
	e, ok := v.entries[d]
	negUntil, refused := v.neg[d]
	v.mu.RUnlock()
	how = keyHit
	if !ok && refused && now.Before(negUntil) {
		return store.Principal{}, how, errKeyInvalid
	}
	if !ok || !now.Before(e.until) {
		how = keyMiss
		ch := v.group.DoChan(string(d[:]), func() (any, error) { return v.lookup(ctx, key) })
		select {
		case r := <-ch:
			if r.Err != nil {
				return store.Principal{}, how, r.Err
			}
			e = r.Val.(keyEntry)
		case <-ctx.Done():
			return store.Principal{}, how, fmt.Errorf("%w: %w", errStore, ctx.Err())
		}
	}
	switch {
	case !e.valid:
		return store.Principal{}, how, errKeyInvalid
	case !e.keyExpires.IsZero() && !now.Before(e.keyExpires):
		return store.Principal{}, how, errKeyExpired
	}
	return e.principal, how, nil
}

// lookup reads the key and its owner under the Check deadline and caches
// the outcome. Store errors are not cached.
func (v *keyVerifier) lookup(ctx context.Context, key apikey.Key) (keyEntry, error) {
	// Shared by concurrent callers: one caller's cancellation must not fail
	// the others, so only the deadline carries over.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), v.timeout)
	defer cancel()
	e := keyEntry{keyID: key.ID(), until: v.now().Add(v.ttl)}
	rec, err := v.st.APIKeyByID(ctx, key.ID())
	switch {
	case errors.Is(err, store.ErrNotFound):
		v.refuse(key.Digest(), e.until)
		return e, nil
	case err != nil:
		return keyEntry{}, fmt.Errorf("%w: api key: %w", errStore, err)
	}
	if !apikey.Equal(rec.Digest, key.Digest()) {
		v.refuse(key.Digest(), e.until)
		return e, nil
	}
	u, err := v.st.UserByID(ctx, rec.UserID)
	switch {
	case errors.Is(err, store.ErrNotFound):
		v.refuse(key.Digest(), e.until)
		return e, nil
	case err != nil:
		return keyEntry{}, fmt.Errorf("%w: api key owner: %w", errStore, err)
	}
	orgs, err := v.st.UserOrgs(ctx, rec.UserID)
	if err != nil {
		return keyEntry{}, fmt.Errorf("%w: api key owner's organisations: %w", errStore, err)
	}
	e.valid, e.keyExpires = true, rec.ExpiresAt
	e.principal = store.Principal{UserID: u.ID, Roles: u.Roles, Orgs: orgs}
	v.put(key.Digest(), e)
	return e, nil
}

func (v *keyVerifier) put(d apikey.Digest, e keyEntry) {
	if v.ttl <= 0 {
		return
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if len(v.entries) >= v.size {
		now := v.now()
		for k, old := range v.entries {
			if !now.Before(old.until) {
				delete(v.entries, k)
			}
		}
		// Still full: drop arbitrary entries (map order) down to 90 %.
		for k := range v.entries {
			if len(v.entries) < v.size*9/10 {
				break
			}
			delete(v.entries, k)
		}
	}
	delete(v.neg, d)
	v.entries[d] = e
}

// refuse caches a refusal until the given time, in the refusal cache only.
func (v *keyVerifier) refuse(d apikey.Digest, until time.Time) {
	if v.ttl <= 0 {
		return
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if len(v.neg) >= v.negSize {
		now := v.now()
		for k, u := range v.neg {
			if !now.Before(u) {
				delete(v.neg, k)
			}
		}
		for k := range v.neg {
			if len(v.neg) < v.negSize*9/10 || len(v.neg) == 0 {
				break
			}
			delete(v.neg, k)
		}
	}
	delete(v.entries, d)
	v.neg[d] = until
}

func (v *keyVerifier) negativeLen() int {
	v.mu.RLock()
	defer v.mu.RUnlock()
	return len(v.neg)
}

// forget drops the cached outcome of key id on this replica (after a revoke
// or a change of its owner's roles); other replicas see it within the TTL.
func (v *keyVerifier) forget(keyID string) {
	v.mu.Lock()
	defer v.mu.Unlock()
	for d, e := range v.entries {
		if e.keyID == keyID {
			delete(v.entries, d)
		}
	}
}

// forgetUser drops every cached key of userID.
func (v *keyVerifier) forgetUser(userID string) {
	v.mu.Lock()
	defer v.mu.Unlock()
	for d, e := range v.entries {
		if e.principal.UserID == userID {
			delete(v.entries, d)
		}
	}
}
