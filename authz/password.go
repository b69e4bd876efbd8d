package authz

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"

	"golang.org/x/crypto/argon2"
)

// passwordHasher hashes passwords with argon2id into PHC strings
// ($argon2id$v=19$m=…,t=…,p=…$salt$hash). Verification reads the parameters
// from the stored string, so changing them affects only new hashes.
// At most cap(slots) hashes run at once, bounding the memory an attacker can
// make the service allocate (memoryKiB each) with parallel logins.
type passwordHasher struct {
	memoryKiB uint32
	time      uint32
	threads   uint8
	slots     chan struct{}
}

func newPasswordHasher(memoryKiB, time uint32, concurrency int) passwordHasher {
	return passwordHasher{memoryKiB: memoryKiB, time: time, threads: 1, slots: make(chan struct{}, concurrency)}
}

// errHasherBusy: no argon2 slot freed up before the caller's context ended.
var errHasherBusy = errors.New("password hashing busy")

// idKey runs argon2id in one of the slots. Waiting for a slot ends with
// ctx, with an error wrapping errHasherBusy and ctx.Err().
func (h passwordHasher) idKey(ctx context.Context, password, salt []byte, t, mem uint32, p uint8, n uint32) ([]byte, error) {
	if h.slots != nil {
		select {
		case h.slots <- struct{}{}:
		case <-ctx.Done():
			return nil, fmt.Errorf("%w: %w", errHasherBusy, ctx.Err())
		}
		defer func() { <-h.slots }()
	}
	return argon2.IDKey(password, salt, t, mem, p, n), nil
}

const (
	saltLen = 16
	hashLen = 32
	// maxPasswordLen bounds the work an attacker can ask for.
	maxPasswordLen = 256
)

var errBadHash = errors.New("unrecognised password hash")

// hash returns password's PHC string; waiting for a slot ends with ctx
// (errHasherBusy).
func (h passwordHasher) hash(ctx context.Context, password string) (string, error) {
	salt := make([]byte, saltLen)
	if _, err := rand.Read(salt); err != nil {
		return "", fmt.Errorf("password salt: %w", err)
	}
	sum, err := h.idKey(ctx, []byte(password), salt, h.time, h.memoryKiB, h.threads, hashLen)
	if err != nil {
		return "", err
	}
	b64 := base64.RawStdEncoding
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s",
		argon2.Version, h.memoryKiB, h.time, h.threads, b64.EncodeToString(salt), b64.EncodeToString(sum)), nil
}

// verify reports whether password matches encoded, in time independent of
// where they differ. It fails with errBadHash for an unrecognised encoding
// and errHasherBusy when ctx ends before a slot frees up.
func (h passwordHasher) verify(ctx context.Context, encoded, password string) (bool, error) {
	parts := strings.Split(encoded, "$")
	if len(parts) != 6 || parts[1] != "argon2id" {
		return false, errBadHash
	}
	var version int
	var mem, t uint32
	var p uint8
	if _, err := fmt.Sscanf(parts[2], "v=%d", &version); err != nil || version != argon2.Version {
		return false, errBadHash
	}
	if _, err := fmt.Sscanf(parts[3], "m=%d,t=%d,p=%d", &mem, &t, &p); err != nil || t == 0 || p == 0 {
		return false, errBadHash
	}
	b64 := base64.RawStdEncoding
	salt, err := b64.DecodeString(parts[4])
	if err != nil {
		return false, errBadHash
	}
	want, err := b64.DecodeString(parts[5])
	if err != nil || len(want) == 0 {
		return false, errBadHash
	}
	got, err := h.idKey(ctx, []byte(password), salt, t, mem, p, uint32(len(want)))
	if err != nil {
		return false, err
	}
	return subtle.ConstantTimeCompare(got, want) == 1, nil
}
