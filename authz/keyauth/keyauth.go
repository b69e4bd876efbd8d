// Package keyauth verifies API keys (authz/apikey) against the store and
// caches the outcome by the key's digest, never the key. A malformed key
// or bad checksum is refused without a lookup; valid keys and refusals are
// cached apart (refusals in a tenth of the room), so unknown keys, which
// anyone can mint with valid checksums, never evict valid ones. A revoked
// key stops working at once where Forget is called and elsewhere within
// the cache TTL.
package keyauth

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

// Verification outcomes, which callers turn into answers.
var (
	ErrInvalid = errors.New("invalid api key")
	ErrExpired = errors.New("api key expired")
	// ErrStore wraps a store failure or timeout: the answer is the
	// configured failure mode, not a 401.
	ErrStore = errors.New("store unavailable")
)

// Lookup is what API key verification reads from the store.
type Lookup interface {
	APIKeyByID(ctx context.Context, id string) (store.APIKey, error)
	UserByID(ctx context.Context, id string) (store.User, error)
	UserOrgs(ctx context.Context, userID string) ([]string, error)
}

// Verifier verifies API keys and caches the outcome, good or bad, by
// the key's digest (never the key) for Options.TTL. Valid keys and refusals
// live in separate caches: anyone can mint unknown keys with valid
// checksums, and filling the refusal cache with them (bounded by negSize, a
// tenth of Options.Size) never evicts a valid key. A malformed key or bad checksum is refused
// before any lookup. Concurrent misses for one key share one lookup. Safe
// for concurrent use.
type Verifier struct {
	st      Lookup
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

// Options configure a Verifier.
type Options struct {
	TTL     time.Duration    // how long an outcome is cached; 0 caches nothing
	Size    int              // valid keys cached; refusals get a tenth of it
	Timeout time.Duration    // deadline of each lookup's store calls
	Now     func() time.Time // nil means time.Now
}

// New returns a Verifier reading st.
func New(st Lookup, opt Options) *Verifier {
	if opt.Now == nil {
		opt.Now = time.Now
	}
	return &Verifier{st: st, ttl: opt.TTL, size: opt.Size, timeout: opt.Timeout, now: opt.Now,
		entries: map[apikey.Digest]keyEntry{}, neg: map[apikey.Digest]time.Time{}, negSize: max(1, opt.Size/10)}
}

// How Verify reached its answer, for a cache metric.
const (
	Hit       = "hit"       // from the cache
	Miss      = "miss"      // from the store
	Malformed = "malformed" // refused without a lookup
)

// Verify returns the key's owner, or ErrInvalid, ErrExpired, or an
// error wrapping ErrStore, and how it got there (Hit, Miss, Malformed).
func (v *Verifier) Verify(ctx context.Context, raw string) (p store.Principal, how string, err error) {
	key, err := apikey.Parse(raw)
	if err != nil {
		return store.Principal{}, Malformed, ErrInvalid
	}
	d := key.Digest()
	now := v.now()
	v.mu.RLock()
	e, ok := v.entries[d]
	negUntil, refused := v.neg[d]
	v.mu.RUnlock()
	how = Hit
	if !ok && refused && now.Before(negUntil) {
		return store.Principal{}, how, ErrInvalid
	}
	if !ok || !now.Before(e.until) {
		how = Miss
		ch := v.group.DoChan(string(d[:]), func() (any, error) { return v.lookup(ctx, key) })
		select {
		case r := <-ch:
			if r.Err != nil {
				return store.Principal{}, how, r.Err
			}
			e = r.Val.(keyEntry)
		case <-ctx.Done():
			return store.Principal{}, how, fmt.Errorf("%w: %w", ErrStore, ctx.Err())
		}
	}
	switch {
	case !e.valid:
		return store.Principal{}, how, ErrInvalid
	case !e.keyExpires.IsZero() && !now.Before(e.keyExpires):
		return store.Principal{}, how, ErrExpired
	}
	return e.principal, how, nil
}

// lookup reads the key and its owner under Options.Timeout and caches
// the outcome. Store errors are not cached.
func (v *Verifier) lookup(ctx context.Context, key apikey.Key) (keyEntry, error) {
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
		return keyEntry{}, fmt.Errorf("%w: api key: %w", ErrStore, err)
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
		return keyEntry{}, fmt.Errorf("%w: api key owner: %w", ErrStore, err)
	}
	orgs, err := v.st.UserOrgs(ctx, rec.UserID)
	if err != nil {
		return keyEntry{}, fmt.Errorf("%w: api key owner's organisations: %w", ErrStore, err)
	}
	e.valid, e.keyExpires = true, rec.ExpiresAt
	e.principal = store.Principal{UserID: u.ID, Roles: u.Roles, Orgs: orgs}
	v.put(key.Digest(), e)
	return e, nil
}

func (v *Verifier) put(d apikey.Digest, e keyEntry) {
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
func (v *Verifier) refuse(d apikey.Digest, until time.Time) {
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

// Forget drops the cached outcome of key id on this replica (after a revoke
// or a change of its owner's roles); other replicas see it within the TTL.
func (v *Verifier) Forget(keyID string) {
	v.mu.Lock()
	defer v.mu.Unlock()
	for d, e := range v.entries {
		if e.keyID == keyID {
			delete(v.entries, d)
		}
	}
}

// ForgetUser drops every cached key of userID.
func (v *Verifier) ForgetUser(userID string) {
	v.mu.Lock()
	defer v.mu.Unlock()
	for d, e := range v.entries {
		if e.principal.UserID == userID {
			delete(v.entries, d)
		}
	}
}
