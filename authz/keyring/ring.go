// Package keyring holds the service's JWT signing keys and the access
// tokens made with them. Keys (RSA 2048, RS256 only) are stored sealed with
// AES-256-GCM under a key derived from the signing secret, loaded at start,
// reloaded at every Refresh and rotated by kid when the newest is older than
// the rotation period, so tokens survive restarts and are valid on every
// replica. A new key is published before it signs, and a superseded one
// keeps verifying until every token it signed has expired. Tokens issues
// and verifies JWTs on the ring's current Set, in memory only, caching
// verifications; the Set is swapped only when its kids change, so cached
// verifications survive a reload.
package keyring

import (
	"cmp"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/leakytokens/leaky/authz/store"
)

// Alg is the only JWT algorithm the service signs or accepts.
const Alg = "RS256"

// rsaBits is the size of generated signing keys.
const rsaBits = 2048

// Set is an immutable snapshot of the signing keys: the one that signs
// and every public key a token may still be verified with, by kid. Safe
// for concurrent use.
type Set struct {
	signKID string
	sign    *rsa.PrivateKey
	verify  map[string]*rsa.PublicKey
	jwks    []byte // the JSON Web Key Set document
}

// Ring loads the sealed signing keys from the store, creates and stores
// a new one when the newest is older than Options.RotateEvery, and serves
// an in-memory Set. Keys are never generated afresh at start when the store
// holds a usable one, so tokens survive restarts and are valid on every
// replica. Safe for concurrent use.
type Ring struct {
	keys         store.SigningKeyStore
	aead         cipher.AEAD
	rotateEvery  time.Duration
	publishDelay time.Duration
	retainFor    time.Duration
	now          func() time.Time

	mu  sync.Mutex // serialises refresh
	cur atomic.Pointer[Set]
}

// Options configure a Ring.
type Options struct {
	// RotateEvery is the age of the newest key at which a new one is made.
	RotateEvery time.Duration
	// PublishDelay is how long a new key is only published before it
	// signs: every replica has reloaded it by then.
	PublishDelay time.Duration
	// RetainFor is how long a superseded key keeps verifying after its
	// successor started signing: longer than any token it signed lives.
	RetainFor time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// NewRing returns a Ring on st whose keys are sealed under a key derived
// from secret. It holds no Set until the first successful Refresh.
func NewRing(st store.SigningKeyStore, secret string, opt Options) (*Ring, error) {
	k, err := hkdf.Key(sha256.New, []byte(secret), nil, "leaky-tokens authz signing keys v1", 32)
	if err != nil {
		return nil, fmt.Errorf("derive key encryption key: %w", err)
	}
	block, err := aes.NewCipher(k)
	if err != nil {
		return nil, fmt.Errorf("key encryption cipher: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("key encryption cipher: %w", err)
	}
	if opt.Now == nil {
		opt.Now = time.Now
	}
	return &Ring{keys: st, aead: aead, rotateEvery: opt.RotateEvery, publishDelay: opt.PublishDelay,
		retainFor: opt.RetainFor, now: opt.Now}, nil
}

// Set returns the current snapshot; nil before the first successful
// Refresh.
func (r *Ring) Set() *Set { return r.cur.Load() }

// Refresh reloads the keys, rotating first when due. On error the previous
// snapshot keeps serving.
func (r *Ring) Refresh(ctx context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	stored, err := r.keys.SigningKeys(ctx)
	if err != nil {
		return fmt.Errorf("load signing keys: %w", err)
	}
	now := r.now()
	if len(stored) == 0 || now.Sub(newest(stored).CreatedAt) >= r.rotateEvery {
		k, err := r.generate(now)
		if err != nil {
			return err
		}
		if err := r.keys.CreateSigningKey(ctx, k); err != nil && !errors.Is(err, store.ErrConflict) {
			return fmt.Errorf("store signing key: %w", err)
		}
		if stored, err = r.keys.SigningKeys(ctx); err != nil {
			return fmt.Errorf("load signing keys: %w", err)
		}
	}
	set, err := r.build(stored, now)
	if err != nil {
		return err
	}
	// Keep the current snapshot when nothing changed: verified tokens are
	// cached per snapshot, and a new pointer every KeyRefresh would throw
	// the cache away.
	if old := r.cur.Load(); old != nil && old.sameKeys(set) {
		return nil
	}
	r.cur.Store(set)
	return nil
}

// KID is the id of the key that signs.
func (s *Set) KID() string { return s.signKID }

// JWKS is the JSON Web Key Set document of every key that verifies.
func (s *Set) JWKS() []byte { return s.jwks }

// sameKeys reports whether s and o sign with the same kid and verify with
// the same kids. Key material under a kid never changes.
func (s *Set) sameKeys(o *Set) bool {
	if s.signKID != o.signKID || len(s.verify) != len(o.verify) {
		return false
	}
	for kid := range s.verify {
		if _, ok := o.verify[kid]; !ok {
			return false
		}
	}
	return true
}

func newest(keys []store.SigningKey) store.SigningKey {
	return slices.MaxFunc(keys, func(a, b store.SigningKey) int {
		return cmp.Or(a.CreatedAt.Compare(b.CreatedAt), cmp.Compare(a.KID, b.KID))
	})
}

// generate makes a key and seals it. The stored form, which every replica
// and release must read alike: Sealed is the AES-256-GCM nonce followed by
// the sealed PKCS#8 DER of the key, with the kid as additional data, under
// HKDF-SHA256(secret, no salt, info "leaky-tokens authz signing keys v1").
func (r *Ring) generate(now time.Time) (store.SigningKey, error) {
	priv, err := rsa.GenerateKey(rand.Reader, rsaBits)
	if err != nil {
		return store.SigningKey{}, fmt.Errorf("generate signing key: %w", err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return store.SigningKey{}, fmt.Errorf("encode signing key: %w", err)
	}
	var id [12]byte
	if _, err := rand.Read(id[:]); err != nil {
		return store.SigningKey{}, fmt.Errorf("signing key id: %w", err)
	}
	kid := base64.RawURLEncoding.EncodeToString(id[:])
	nonce := make([]byte, r.aead.NonceSize(), r.aead.NonceSize()+len(der)+r.aead.Overhead())
	if _, err := rand.Read(nonce); err != nil {
		return store.SigningKey{}, fmt.Errorf("seal signing key: %w", err)
	}
	sealed := r.aead.Seal(nonce, nonce, der, []byte(kid))
	return store.SigningKey{KID: kid, Sealed: sealed, CreatedAt: now.UTC().Truncate(time.Microsecond)}, nil
}

func (r *Ring) open(k store.SigningKey) (*rsa.PrivateKey, error) {
	ns := r.aead.NonceSize()
	if len(k.Sealed) < ns {
		return nil, errors.New("sealed key too short")
	}
	der, err := r.aead.Open(nil, k.Sealed[:ns], k.Sealed[ns:], []byte(k.KID))
	if err != nil {
		return nil, errors.New("cannot unseal (wrong signing secret?)")
	}
	key, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		return nil, fmt.Errorf("parse: %w", err)
	}
	priv, ok := key.(*rsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("not an RSA key: %T", key)
	}
	return priv, nil
}

// build chooses the signing key (the newest that is published, else the
// newest) and the verification keys.
func (r *Ring) build(stored []store.SigningKey, now time.Time) (*Set, error) {
	keys := slices.Clone(stored)
	slices.SortFunc(keys, func(a, b store.SigningKey) int {
		return cmp.Or(a.CreatedAt.Compare(b.CreatedAt), cmp.Compare(a.KID, b.KID))
	})
	signIdx := len(keys) - 1
	for i := len(keys) - 1; i >= 0; i-- {
		if now.Sub(keys[i].CreatedAt) >= r.publishDelay {
			signIdx = i
			break
		}
	}
	set := &Set{verify: map[string]*rsa.PublicKey{}}
	var jwks []jwk
	for i, k := range keys {
		// A key stops verifying retainFor after its successor began signing.
		if i < signIdx && now.Sub(keys[i+1].CreatedAt.Add(r.publishDelay)) > r.retainFor {
			continue
		}
		priv, err := r.open(k)
		if err != nil {
			return nil, fmt.Errorf("signing key %s: %w", k.KID, err)
		}
		set.verify[k.KID] = &priv.PublicKey
		jwks = append(jwks, publicJWK(k.KID, &priv.PublicKey))
		if i == signIdx {
			set.signKID, set.sign = k.KID, priv
		}
	}
	doc, err := json.Marshal(map[string][]jwk{"keys": jwks})
	if err != nil {
		return nil, fmt.Errorf("encode jwks: %w", err)
	}
	set.jwks = doc
	return set, nil
}

// jwk is one public RSA key of a JSON Web Key Set (RFC 7517).
type jwk struct {
	Kty string `json:"kty"`
	Use string `json:"use"`
	Alg string `json:"alg"`
	Kid string `json:"kid"`
	N   string `json:"n"`
	E   string `json:"e"`
}

func publicJWK(kid string, pub *rsa.PublicKey) jwk {
	b64 := base64.RawURLEncoding
	return jwk{Kty: "RSA", Use: "sig", Alg: Alg, Kid: kid,
		N: b64.EncodeToString(pub.N.Bytes()), E: b64.EncodeToString(big.NewInt(int64(pub.E)).Bytes())}
}
