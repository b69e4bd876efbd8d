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
//
// Hashing is bounded twice. At most cap(slots) hashes run at once: fewer
// than the cores, so that a flood of logins leaves Check a core (argon2 is
// pure CPU, and Check must answer within Envoy's 200 ms), and bounding the
// memory an attacker can make the service allocate (memoryKiB each). At
// most cap(queue) callers wait for a slot; one more is refused at once with
// errHasherBusy rather than queued behind work it would wait seconds for.
type passwordHasher struct {
	memoryKiB uint32
	time      uint32
	threads   uint8
	slots     chan struct{} // one token per running hash; nil: unbounded
	queue     chan struct{} // one token per caller waiting for a slot
	// kdf is argon2.IDKey; tests wrap it to watch the bound.
	kdf func(password, salt []byte, time, memory uint32, threads uint8, keyLen uint32) []byte
}

// newPasswordHasher returns a hasher running at most concurrency hashes at
// once (at least 1) with at most queue callers waiting for a slot.
func newPasswordHasher(memoryKiB, time uint32, concurrency, queue int) passwordHasher {
	return passwordHasher{memoryKiB: memoryKiB, time: time, threads: 1,
		slots: make(chan struct{}, max(1, concurrency)), queue: make(chan struct{}, max(0, queue)), kdf: argon2.IDKey}
}

// defaultHashers is the hashing pool's size when the configuration leaves
// it to the service: one core fewer than GOMAXPROCS, and at least one.
func defaultHashers(gomaxprocs int) int { return max(1, gomaxprocs-1) }

// errHasherBusy: the queue for an argon2 slot was full, or no slot freed up
// before the caller's context ended.
var errHasherBusy = errors.New("password hashing busy")

// idKey runs argon2id in one of the slots. A full queue fails at once, and
// waiting for a slot ends with ctx, both with an error wrapping
// errHasherBusy (and ctx.Err()).
func (h passwordHasher) idKey(ctx context.Context, password, salt []byte, t, mem uint32, p uint8, n uint32) ([]byte, error) {
	kdf := h.kdf
	if kdf == nil {
		kdf = argon2.IDKey
	}
	if h.slots == nil {
		return kdf(password, salt, t, mem, p, n), nil
	}
	select {
	case h.slots <- struct{}{}: // a free slot: no wait
	default:
		select {
		case h.queue <- struct{}{}:
		default:
			return nil, fmt.Errorf("%w: %d waiting", errHasherBusy, cap(h.queue))
		}
		select {
		case h.slots <- struct{}{}:
			<-h.queue
		case <-ctx.Done():
			<-h.queue
			return nil, fmt.Errorf("%w: %w", errHasherBusy, ctx.Err())
		}
	}
	defer func() { <-h.slots }()
	return kdf(password, salt, t, mem, p, n), nil
}

const (
	saltLen = 16
	hashLen = 32
	// maxPasswordLen bounds, in characters (at most 1 KiB of UTF-8), what a
	// login or registration hands to argon2. Its cost
	// hardly depends on the length (the password is hashed once into
	// argon2's seed); the pool above bounds the work.
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
