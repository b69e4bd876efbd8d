package contract

import (
	"crypto/sha256"
	"encoding/base64"
	"strconv"
	"strings"
)

// Descriptor is a parsed descriptor of the leaky-tokens domain: the bucket
// it names and the values that size it.
type Descriptor struct {
	Scope    Scope
	Provider string // always set
	Tier     string // ScopeUser only; may be empty or unknown to the policy
	User     string // ScopeUser only
	Org      string // ScopeOrg only
}

// Parser parses one descriptor from its entries without allocating: Add
// each entry, then call Descriptor. The zero Parser is ready to use.
type Parser struct {
	provider, tier, user, org     string
	nProvider, nTier, nUser, nOrg int
	unknown                       bool
}

// Add records one entry, in any order.
func (p *Parser) Add(key, value string) {
	switch key {
	case KeyProvider:
		p.provider, p.nProvider = value, p.nProvider+1
	case KeyTier:
		p.tier, p.nTier = value, p.nTier+1
	case KeyUser:
		p.user, p.nUser = value, p.nUser+1
	case KeyOrg:
		p.org, p.nOrg = value, p.nOrg+1
	default:
		p.unknown = true
	}
}

// Descriptor returns the descriptor the entries added make, and false when
// they have no rule. The shapes with a rule, each key at most once and in
// any order, are exactly:
//
//	provider (non-empty), tier (any value), user (non-empty)  ScopeUser
//	provider (non-empty), org (non-empty)                     ScopeOrg
//	provider (non-empty)                                      ScopeProvider
//
// Any other key, a repeated key, an empty provider, user or org, or any
// other combination has no rule.
func (p *Parser) Descriptor() (Descriptor, bool) {
	switch {
	case p.unknown || p.nProvider != 1 || p.provider == "":
		return Descriptor{}, false
	case p.nTier == 1 && p.nUser == 1 && p.nOrg == 0 && p.user != "":
		return Descriptor{Scope: ScopeUser, Provider: p.provider, Tier: p.tier, User: p.user}, true
	case p.nOrg == 1 && p.nTier == 0 && p.nUser == 0 && p.org != "":
		return Descriptor{Scope: ScopeOrg, Provider: p.provider, Org: p.org}, true
	case p.nTier == 0 && p.nUser == 0 && p.nOrg == 0:
		return Descriptor{Scope: ScopeProvider, Provider: p.provider}, true
	}
	return Descriptor{}, false
}

// ParseDescriptor parses plain entries; see Parser.Descriptor for the rules.
func ParseDescriptor(entries []Entry) (Descriptor, bool) {
	var p Parser
	for _, e := range entries {
		p.Add(e.Key, e.Value)
	}
	return p.Descriptor()
}

// Key is the store key of d's bucket (before the store's own prefix):
//
//	ScopeUser      "u:" + KeyPart(provider) + ":" + KeyPart(user)
//	ScopeOrg       "o:" + KeyPart(provider) + ":" + KeyPart(org)
//	ScopeProvider  "p:" + KeyPart(provider)
//
// The tier is not part of the key: a user whose tier changes keeps their
// bucket. Keys are stable: existing bucket state depends on them. A
// Descriptor with no known scope has no key ("").
func (d Descriptor) Key() string {
	switch d.Scope {
	case ScopeUser:
		return "u:" + KeyPart(d.Provider) + ":" + KeyPart(d.User)
	case ScopeOrg:
		return "o:" + KeyPart(d.Provider) + ":" + KeyPart(d.Org)
	case ScopeProvider:
		return "p:" + KeyPart(d.Provider)
	}
	return ""
}

// KeyPart makes a value safe to embed in a store key: a value of at most
// 64 bytes holding none of ':', '#', '=' stays as it is (readable); any
// other is replaced by "#" and the unpadded base64url of the first 16 bytes
// of its SHA-256, which no plain value can equal.
func KeyPart(v string) string {
	if len(v) <= 64 && !strings.ContainsAny(v, ":#=") {
		return v
	}
	sum := sha256.Sum256([]byte(v))
	return "#" + base64.RawURLEncoding.EncodeToString(sum[:16])
}

// QuotaKey is the store key of a quota pool's counter for the window that
// starts at windowStart (Unix seconds): the pool of subject (a user id for
// ScopeUser, an organisation id for ScopeOrg) for provider. Each window has
// its own key, so a window's end needs no reset. The store keeps quota
// state apart from buckets (its own key prefix), so the pool's bucket key
// is reused.
func QuotaKey(scope Scope, subject, provider string, windowStart int64) string {
	return PurchasedKey(scope, subject, provider) + ":" + strconv.FormatInt(windowStart, 10)
}

// PurchasedKey is the store key of a quota pool's purchased balance, which
// outlives every window: the key of the pool's bucket (Descriptor.Key).
func PurchasedKey(scope Scope, subject, provider string) string {
	d := Descriptor{Scope: scope, Provider: provider}
	if scope == ScopeOrg {
		d.Org = subject
	} else {
		d.Scope, d.User = ScopeUser, subject
	}
	return d.Key()
}
