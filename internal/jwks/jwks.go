// Package jwks verifies the access tokens authz issues against the key set
// authz publishes (GET /.well-known/jwks.json), for a service that must
// check a caller's token without sharing authz's keys: the control plane's
// admin API. The set is fetched on first use, cached, and fetched again
// when a token names a kid the cache does not hold (authz rotated its key),
// at most once per Options.MinRefetch, so a flood of tokens with made-up
// kids costs one fetch per interval, not one per token.
package jwks

import (
	"context"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Alg is the only algorithm accepted: the one authz signs with
// (authz/keyring.Alg). A token with another alg, "none" included, is
// refused before any key is looked up.
const Alg = "RS256"

// maxDocument bounds the key set document, in bytes.
const maxDocument = 1 << 20

// maxKIDLen bounds the kid header; authz's are 16 characters.
const maxKIDLen = 64

// ErrUnavailable marks a token that could not be judged because the key
// set could not be fetched (authz down): the caller answers 503, not 401.
var ErrUnavailable = errors.New("key set unavailable")

// Options configure a Verifier.
type Options struct {
	URL      string // the JWKS document, e.g. http://127.0.0.1:8081/.well-known/jwks.json
	Issuer   string // the iss every token must carry
	Audience string // an aud every token must carry
	// MinRefetch is the shortest interval between two fetches of the
	// document after the first. Zero means 5 seconds.
	MinRefetch time.Duration
	// Leeway is the clock skew tolerated on exp, nbf and iat. Zero means
	// none.
	Leeway time.Duration
	// Client fetches the document. Nil: a client with a 5-second timeout.
	Client *http.Client
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Claims are what a verified token says about its caller.
type Claims struct {
	jwt.RegisteredClaims
	Roles []string `json:"roles"`
	// Orgs are the organisations the caller belongs to.
	Orgs []string `json:"orgs"`
	// Owner is, in a client_credentials token, the account the client's
	// requests are charged to; "" in a user's token.
	Owner string `json:"owner"`
	// OwnerRoles are, in a client_credentials token, the owner's roles
	// when the token was issued: they choose the owner's tier.
	OwnerRoles []string `json:"owner_roles"`
}

// HasRole reports whether the claims' roles hold role, compared without
// regard to case (authz upper-cases roles).
func (c *Claims) HasRole(role string) bool {
	for _, r := range c.Roles {
		if strings.EqualFold(r, role) {
			return true
		}
	}
	return false
}

// Verifier checks tokens against a published key set. It is safe for
// concurrent use.
type Verifier struct {
	opt    Options
	parser *jwt.Parser

	mu        sync.Mutex // serialises fetches and guards the fields below
	keys      map[string]*rsa.PublicKey
	fetchedAt time.Time // zero: never fetched successfully or not
}

// New returns a Verifier for opt; it fetches nothing until the first
// Verify.
func New(opt Options) *Verifier {
	if opt.MinRefetch == 0 {
		opt.MinRefetch = 5 * time.Second
	}
	if opt.Client == nil {
		opt.Client = &http.Client{Timeout: 5 * time.Second}
	}
	if opt.Now == nil {
		opt.Now = time.Now
	}
	return &Verifier{opt: opt, parser: jwt.NewParser(
		jwt.WithValidMethods([]string{Alg}),
		jwt.WithIssuer(opt.Issuer),
		jwt.WithAudience(opt.Audience),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
		jwt.WithLeeway(opt.Leeway),
		jwt.WithTimeFunc(opt.Now),
	)}
}

// Verify checks raw's algorithm, signature, issuer, audience, exp
// (required), nbf and iat, and returns its claims. A token that cannot be
// judged because the key set cannot be fetched wraps ErrUnavailable; any
// other error means the token is not acceptable. Errors never contain the
// token.
func (v *Verifier) Verify(ctx context.Context, raw string) (*Claims, error) {
	var c Claims
	var unavailable error
	_, err := v.parser.ParseWithClaims(raw, &c, func(tok *jwt.Token) (any, error) {
		kid, ok := tok.Header["kid"].(string)
		if !ok || kid == "" || len(kid) > maxKIDLen {
			return nil, errors.New("missing or malformed kid")
		}
		pub, err := v.key(ctx, kid)
		if errors.Is(err, ErrUnavailable) {
			unavailable = err
		}
		return pub, err
	})
	if unavailable != nil {
		return nil, unavailable
	}
	if err != nil {
		return nil, fmt.Errorf("invalid token: %w", err)
	}
	if c.Subject == "" {
		return nil, errors.New("invalid token: no subject")
	}
	return &c, nil
}

// key returns the public key of kid, fetching the document first when kid
// is unknown and the last fetch is older than MinRefetch.
func (v *Verifier) key(ctx context.Context, kid string) (*rsa.PublicKey, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if k, ok := v.keys[kid]; ok {
		return k, nil
	}
	if !v.fetchedAt.IsZero() && v.opt.Now().Sub(v.fetchedAt) < v.opt.MinRefetch {
		if v.keys == nil {
			return nil, fmt.Errorf("%w: the last fetch failed", ErrUnavailable)
		}
		return nil, errors.New("unknown kid")
	}
	v.fetchedAt = v.opt.Now()
	keys, err := v.fetch(ctx)
	if err != nil {
		if v.keys == nil {
			return nil, fmt.Errorf("%w: %w", ErrUnavailable, err)
		}
		return nil, fmt.Errorf("unknown kid (and the key set could not be fetched again: %w)", err)
	}
	v.keys = keys
	if k, ok := v.keys[kid]; ok {
		return k, nil
	}
	return nil, errors.New("unknown kid")
}

// jwk is one key of the document; only RSA signing keys for Alg are kept.
type jwk struct {
	Kty string `json:"kty"`
	Use string `json:"use"`
	Alg string `json:"alg"`
	Kid string `json:"kid"`
	N   string `json:"n"`
	E   string `json:"e"`
}

// fetch reads the document and returns its RSA keys for Alg by kid. Keys
// of other types or algorithms are skipped; a document without one usable
// key is an error.
func (v *Verifier) fetch(ctx context.Context) (map[string]*rsa.PublicKey, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, v.opt.URL, nil)
	if err != nil {
		return nil, fmt.Errorf("fetch key set: %w", err)
	}
	resp, err := v.opt.Client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("fetch key set: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("fetch key set: %s answered %d", v.opt.URL, resp.StatusCode)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxDocument+1))
	if err != nil {
		return nil, fmt.Errorf("fetch key set: %w", err)
	}
	if len(body) > maxDocument {
		return nil, fmt.Errorf("fetch key set: document larger than %d bytes", maxDocument)
	}
	return parse(body)
}

// parse reads a JSON Web Key Set document (RFC 7517).
func parse(body []byte) (map[string]*rsa.PublicKey, error) {
	var doc struct {
		Keys []jwk `json:"keys"`
	}
	if err := json.Unmarshal(body, &doc); err != nil {
		return nil, fmt.Errorf("key set: %w", err)
	}
	keys := map[string]*rsa.PublicKey{}
	for _, k := range doc.Keys {
		if k.Kty != "RSA" || (k.Alg != "" && k.Alg != Alg) || (k.Use != "" && k.Use != "sig") || k.Kid == "" {
			continue
		}
		pub, err := rsaKey(k)
		if err != nil {
			return nil, fmt.Errorf("key set: key %q: %w", k.Kid, err)
		}
		keys[k.Kid] = pub
	}
	if len(keys) == 0 {
		return nil, errors.New("key set: no RSA signing key for " + Alg)
	}
	return keys, nil
}

func rsaKey(k jwk) (*rsa.PublicKey, error) {
	b64 := base64.RawURLEncoding
	n, err := b64.DecodeString(k.N)
	if err != nil || len(n) == 0 {
		return nil, errors.New("bad modulus")
	}
	e, err := b64.DecodeString(k.E)
	if err != nil || len(e) == 0 || len(e) > 4 {
		return nil, errors.New("bad exponent")
	}
	pub := &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: int(new(big.Int).SetBytes(e).Int64())}
	if pub.N.BitLen() < 2048 || pub.E < 3 || pub.E%2 == 0 {
		return nil, errors.New("modulus under 2048 bits or a bad exponent")
	}
	return pub, nil
}
