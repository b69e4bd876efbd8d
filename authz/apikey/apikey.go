// Package apikey defines the format of Leaky Tokens API keys:
//
//	lt_<id>_<secret><check>
//
// id is 14 base62 characters (80 random bits) and names the key in storage
// without revealing anything secret; secret is 33 base62 characters (192
// random bits); check is 6 base62 characters of CRC-32 over everything before
// it, so that a mistyped or invented key is refused before any storage lookup
// and secret scanners can recognise real keys. Keys are 57 characters long.
//
// Only a SHA-256 digest of the whole key is ever stored; Digest computes it
// and Equal compares two digests in constant time. The key's entropy makes a
// slow hash unnecessary.
package apikey

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"hash/crc32"
	"math/big"
	"strings"
)

// Prefix starts every key.
const Prefix = "lt_"

const (
	idLen     = 14 // base62 digits of 80 bits
	secretLen = 33 // base62 digits of 192 bits
	checkLen  = 6  // base62 digits of 32 bits
	idBytes   = 10
	secBytes  = 24

	// Len is the length of every well-formed key.
	Len = len(Prefix) + idLen + 1 + secretLen + checkLen
)

const alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

// ErrMalformed reports a string that is not a well-formed key: wrong prefix,
// length, alphabet or checksum. It never says which, so it is no oracle.
var ErrMalformed = errors.New("malformed api key")

// Digest is the SHA-256 of a whole key: the only form of it that is stored.
type Digest [sha256.Size]byte

// Key is a parsed, well-formed key. Its String is the secret; never log it.
type Key struct {
	id  string
	raw string
}

// ID is the key's public identifier, its storage lookup key.
func (k Key) ID() string { return k.id }

// String returns the full secret key, to be shown once to its owner.
func (k Key) String() string { return k.raw }

// Digest is the digest to store or to compare with the stored one.
func (k Key) Digest() Digest { return sha256.Sum256([]byte(k.raw)) }

// New returns a fresh key from crypto/rand.
func New() (Key, error) {
	var b [idBytes + secBytes]byte
	if _, err := rand.Read(b[:]); err != nil {
		return Key{}, err
	}
	id := encode(b[:idBytes], idLen)
	body := Prefix + id + "_" + encode(b[idBytes:], secretLen)
	return Key{id: id, raw: body + checksum(body)}, nil
}

// Parse checks s's shape and checksum without any lookup. It accepts
// exactly the strings New produces.
func Parse(s string) (Key, error) {
	if len(s) != Len || !strings.HasPrefix(s, Prefix) || s[len(Prefix)+idLen] != '_' {
		return Key{}, ErrMalformed
	}
	for i := len(Prefix); i < len(s); i++ {
		if i == len(Prefix)+idLen {
			continue
		}
		if strings.IndexByte(alphabet, s[i]) < 0 {
			return Key{}, ErrMalformed
		}
	}
	body, check := s[:len(s)-checkLen], s[len(s)-checkLen:]
	if subtle.ConstantTimeCompare([]byte(checksum(body)), []byte(check)) != 1 {
		return Key{}, ErrMalformed
	}
	return Key{id: s[len(Prefix) : len(Prefix)+idLen], raw: s}, nil
}

// ValidID reports whether id has the shape of a key id.
func ValidID(id string) bool {
	if len(id) != idLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		if strings.IndexByte(alphabet, id[i]) < 0 {
			return false
		}
	}
	return true
}

// Equal compares two digests in constant time.
func Equal(a, b Digest) bool { return subtle.ConstantTimeCompare(a[:], b[:]) == 1 }

func checksum(body string) string {
	c := crc32.ChecksumIEEE([]byte(body))
	var out [checkLen]byte
	for i := checkLen - 1; i >= 0; i-- {
		out[i] = alphabet[c%62]
		c /= 62
	}
	return string(out[:])
}

// encode writes b as a big-endian number in base62, left-padded with zeros
// to width digits.
func encode(b []byte, width int) string {
	n := new(big.Int).SetBytes(b)
	out := make([]byte, width)
	base := big.NewInt(62)
	mod := new(big.Int)
	for i := width - 1; i >= 0; i-- {
		n.DivMod(n, base, mod)
		out[i] = alphabet[mod.Int64()]
	}
	return string(out)
}
