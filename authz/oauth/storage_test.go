package oauth

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/ory/fosite"

	"github.com/leakytokens/leaky/authz/store"
)

// fosite looks a presented refresh token up by its signature before it
// checks the token's HMAC, so a client can present any signature: the
// family tombstones must be out of its reach.
func TestTombstonesUnreachableAsTokens(t *testing.T) {
	ctx := context.Background()
	f := &storage{st: store.NewMemory(), audience: "a", familyTTL: time.Hour}
	if err := f.RevokeRefreshToken(ctx, "fam1"); err != nil {
		t.Fatal(err)
	}
	sig := tombstonePrefix + "fam1"
	if _, err := f.GetRefreshTokenSession(ctx, sig, &Session{}); !errors.Is(err, fosite.ErrNotFound) {
		t.Errorf("GetRefreshTokenSession(tombstone) = %v, want fosite.ErrNotFound", err)
	}
	_ = f.DeleteRefreshTokenSession(ctx, sig)
	_ = f.RotateRefreshToken(ctx, "fam1", sig)
	if revoked, err := f.familyRevoked(ctx, "fam1"); err != nil || !revoked {
		t.Errorf("familyRevoked(fam1) after delete and rotate by its tombstone's signature = %v, %v, want true", revoked, err)
	}
}
