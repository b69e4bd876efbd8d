package keyauth

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/leakytokens/leaky/authz/apikey"
	"github.com/leakytokens/leaky/authz/store"
)

// fakeKeys is a Lookup holding one key of one user; it counts lookups.
type fakeKeys struct {
	key     store.APIKey
	user    store.User
	lookups int
}

func (f *fakeKeys) APIKeyByID(_ context.Context, id string) (store.APIKey, error) {
	f.lookups++
	if id != f.key.ID {
		return store.APIKey{}, fmt.Errorf("api key: %w", store.ErrNotFound)
	}
	return f.key, nil
}

func (f *fakeKeys) UserByID(_ context.Context, id string) (store.User, error) {
	if id != f.user.ID {
		return store.User{}, fmt.Errorf("user: %w", store.ErrNotFound)
	}
	return f.user, nil
}

func (f *fakeKeys) UserOrgs(context.Context, string) ([]string, error) { return nil, nil }

// Unknown keys with valid checksums cost anyone nothing to make; caching
// their refusals must never evict a valid key's entry.
func TestKeyCacheNegativesNeverEvictPositives(t *testing.T) {
	good, err := apikey.New()
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeKeys{
		key:  store.APIKey{ID: good.ID(), UserID: "u1", Digest: good.Digest()},
		user: store.User{ID: "u1", Roles: []string{store.RoleUser}},
	}
	v := New(f, Options{TTL: time.Minute, Size: 10, Timeout: time.Second})
	ctx := context.Background()
	if _, _, err := v.Verify(ctx, good.String()); err != nil {
		t.Fatalf("verify(good) = %v", err)
	}
	for range 1000 {
		k, _ := apikey.New()
		if _, _, err := v.Verify(ctx, k.String()); !errors.Is(err, ErrInvalid) {
			t.Fatalf("verify(unknown) = %v, want ErrInvalid", err)
		}
	}
	before := f.lookups
	if _, how, err := v.Verify(ctx, good.String()); err != nil || how != Hit {
		t.Errorf("verify(good) after 1000 unknown keys = %q, %v, want a cache hit", how, err)
	}
	if f.lookups != before {
		t.Errorf("verify(good) made %d lookups, want 0", f.lookups-before)
	}
	// A refusal is still cached, within its own bound.
	unknown, _ := apikey.New()
	_, _, _ = v.Verify(ctx, unknown.String())
	if _, how, _ := v.Verify(ctx, unknown.String()); how != Hit {
		t.Errorf("verify(unknown) again = %q, want a cache hit", how)
	}
	if got := v.negativeLen(); got > v.negSize {
		t.Errorf("negative cache holds %d entries, want at most %d", got, v.negSize)
	}
}

// negativeLen is how many refusals v holds.
func (v *Verifier) negativeLen() int {
	v.mu.RLock()
	defer v.mu.RUnlock()
	return len(v.neg)
}
