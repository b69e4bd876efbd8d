package authz

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

// signingAlg is the only JWT algorithm the service signs or accepts.
const signingAlg = "RS256"

// rsaBits is the size of generated signing keys.
const rsaBits = 2048

// keySet is an immutable snapshot of the signing keys: the one that signs
// and every public key a token may still be verified with, by kid.
type keySet struct {
	signKID string
	sign    *rsa.PrivateKey
	verify  map[string]*rsa.PublicKey
	jwks    []byte // the JSON Web Key Set document
}

// keyRing loads the sealed signing keys from the store, creates and stores
// a new one when the newest is older than rotateEvery, and serves an
// in-memory keySet. Keys are never generated afresh at start when the store
// holds a usable one, so tokens survive restarts and are valid on every
// replica. A new key signs only once it is older than publishDelay (every
// replica has reloaded it by then); a superseded key keeps verifying for
// retainFor after its successor started signing.
type keyRing struct {
	keys         store.SigningKeyStore
	aead         cipher.AEAD
	rotateEvery  time.Duration
	publishDelay time.Duration
	retainFor    time.Duration
	now          func() time.Time

	mu  sync.Mutex // serialises refresh
	cur atomic.Pointer[keySet]
}

func newKeyRing(st store.SigningKeyStore, secret string, rotateEvery, publishDelay, retainFor time.Duration) (*keyRing, error) {
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
	return &keyRing{keys: st, aead: aead, rotateEvery: rotateEvery, publishDelay: publishDelay,
		retainFor: retainFor, now: time.Now}, nil
}

// set returns the current snapshot; nil before the first successful refresh.
func (r *keyRing) set() *keySet { return r.cur.Load() }

// refresh reloads the keys, rotating first when due. On error the previous
// snapshot keeps serving.
func (r *keyRing) refresh(ctx context.Context) error {
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

// sameKeys reports whether s and o sign with the same kid and verify with
// the same kids. Key material under a kid never changes.
func (s *keySet) sameKeys(o *keySet) bool {
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

func (r *keyRing) generate(now time.Time) (store.SigningKey, error) {
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

func (r *keyRing) open(k store.SigningKey) (*rsa.PrivateKey, error) {
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
func (r *keyRing) build(stored []store.SigningKey, now time.Time) (*keySet, error) {
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
	set := &keySet{verify: map[string]*rsa.PublicKey{}}
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
	return jwk{Kty: "RSA", Use: "sig", Alg: signingAlg, Kid: kid,
		N: b64.EncodeToString(pub.N.Bytes()), E: b64.EncodeToString(big.NewInt(int64(pub.E)).Bytes())}
}
