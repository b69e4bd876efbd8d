package keyring

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/leakytokens/leaky/authz/store"
)

// Claims are the claims of every access token the service issues, whether
// from login, registration or /oauth2/token.
type Claims struct {
	jwt.RegisteredClaims
	Roles    []string `json:"roles"`
	Orgs     []string `json:"orgs,omitempty"`
	ClientID string   `json:"client_id,omitempty"`
	Scope    []string `json:"scp,omitempty"`
	// Owner and OwnerRoles are, in a client_credentials token, the
	// client's owner and the owner's roles when the token was issued: the
	// account its requests are charged to (store.Principal.Account).
	Owner      string   `json:"owner,omitempty"`
	OwnerRoles []string `json:"owner_roles,omitempty"`
}

// Principal is the caller the claims speak for, roles normalised.
func (c *Claims) Principal() store.Principal {
	p := store.Principal{UserID: c.Subject, Roles: store.NormRoles(c.Roles), Orgs: c.Orgs, Owner: c.Owner}
	if c.Owner != "" {
		p.OwnerRoles = store.NormRoles(c.OwnerRoles)
	}
	return p
}

// maxKIDLen bounds the kid header; keys the service makes are 16 characters.
const maxKIDLen = 64

// ErrNoKeys: the ring has no Set yet (no Refresh has succeeded).
var ErrNoKeys = errors.New("no signing keys loaded")

// Tokens issues and verifies access tokens with the key ring's current set.
// Verification never leaves memory: the kid is looked up only in the set.
// Successful verifications are cached by the token's SHA-256 until the
// token expires, so a token seen before costs a hash, not an RSA
// verification; a cached result is dropped when the key set changes.
type Tokens struct {
	ring     *Ring
	issuer   string
	audience string
	ttl      time.Duration
	leeway   time.Duration
	now      func() time.Time
	parser   *jwt.Parser

	mu    sync.RWMutex
	cache map[[sha256.Size]byte]verified
}

// verified is a cached successful verification.
type verified struct {
	claims *Claims
	set    *Set      // the key set it was verified with
	exp    time.Time // the token's exp plus leeway
}

// maxVerifiedCache bounds the verification cache.
const maxVerifiedCache = 100_000

// TokenOptions configure Tokens.
type TokenOptions struct {
	Issuer   string           // iss of every token issued, and the one required
	Audience string           // aud when the claims name none, and the one required
	TTL      time.Duration    // lifetime when the claims set no exp
	Leeway   time.Duration    // clock skew tolerated on exp, nbf and iat
	Now      func() time.Time // nil means time.Now
}

// NewTokens returns Tokens on ring's current Set.
func NewTokens(ring *Ring, opt TokenOptions) *Tokens {
	if opt.Now == nil {
		opt.Now = time.Now
	}
	t := &Tokens{ring: ring, issuer: opt.Issuer, audience: opt.Audience, ttl: opt.TTL, leeway: opt.Leeway, now: opt.Now,
		cache: map[[sha256.Size]byte]verified{}}
	t.parser = jwt.NewParser(
		jwt.WithValidMethods([]string{Alg}),
		jwt.WithIssuer(opt.Issuer),
		jwt.WithAudience(opt.Audience),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
		jwt.WithLeeway(opt.Leeway),
		jwt.WithTimeFunc(opt.Now),
	)
	return t
}

// newJTI returns 128 random bits in hex.
func newJTI() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails
	return hex.EncodeToString(b[:])
}

// Issue signs claims after filling iss, iat, jti, and, when unset, aud and
// exp (now + the configured lifetime).
func (t *Tokens) Issue(c Claims) (string, error) {
	set := t.ring.Set()
	if set == nil {
		return "", ErrNoKeys
	}
	now := t.now()
	c.Issuer = t.issuer
	if len(c.Audience) == 0 {
		c.Audience = jwt.ClaimStrings{t.audience}
	}
	c.IssuedAt = jwt.NewNumericDate(now)
	if c.ExpiresAt == nil {
		c.ExpiresAt = jwt.NewNumericDate(now.Add(t.ttl))
	}
	if c.ID == "" {
		c.ID = newJTI()
	}
	if c.Roles == nil {
		c.Roles = []string{}
	}
	tok := jwt.NewWithClaims(jwt.SigningMethodRS256, c)
	tok.Header["kid"] = set.signKID
	s, err := tok.SignedString(set.sign)
	if err != nil {
		return "", fmt.Errorf("sign token: %w", err)
	}
	return s, nil
}

// Verify checks signature, algorithm, issuer, audience, exp (required),
// nbf and iat, and returns the claims. Errors never include the token.
func (t *Tokens) Verify(raw string) (*Claims, error) {
	set := t.ring.Set()
	if set == nil {
		return nil, ErrNoKeys
	}
	sum := sha256.Sum256([]byte(raw))
	t.mu.RLock()
	v, ok := t.cache[sum]
	t.mu.RUnlock()
	if ok && v.set == set && t.now().Before(v.exp) {
		return v.claims, nil
	}
	var c Claims
	_, err := t.parser.ParseWithClaims(raw, &c, func(tok *jwt.Token) (any, error) {
		if tok.Method != jwt.SigningMethodRS256 {
			return nil, errors.New("unexpected signing method")
		}
		kid, ok := tok.Header["kid"].(string)
		if !ok || kid == "" || len(kid) > maxKIDLen {
			return nil, errors.New("missing or malformed kid")
		}
		pub, ok := set.verify[kid]
		if !ok {
			return nil, errors.New("unknown kid")
		}
		return pub, nil
	})
	if err != nil {
		return nil, fmt.Errorf("invalid token: %w", err)
	}
	if c.Subject == "" {
		return nil, errors.New("invalid token: no subject")
	}
	t.remember(sum, verified{claims: &c, set: set, exp: c.ExpiresAt.Add(t.leeway)})
	return &c, nil
}

// remember caches a verification; when full it first drops expired
// entries, then arbitrary ones.
func (t *Tokens) remember(sum [sha256.Size]byte, v verified) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.cache) >= maxVerifiedCache {
		now := t.now()
		for k, old := range t.cache {
			if !now.Before(old.exp) {
				delete(t.cache, k)
			}
		}
		for k := range t.cache {
			if len(t.cache) < maxVerifiedCache*9/10 {
				break
			}
			delete(t.cache, k)
		}
	}
	t.cache[sum] = v
}
