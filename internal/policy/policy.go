// Package policy reads the Leaky Tokens policy file: the tiers, the bucket
// sizes per provider, the organisation and provider pools and the failure mode
// of domain leaky-tokens. The ratelimit service decides with it; the authz
// service maps roles to tiers with it. Both read the same file.
package policy

import (
	"bytes"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/leakytokens/leaky/internal/contract"
)

// Domain is the rate-limit domain the policy governs.
const Domain = contract.Domain

// Wildcard is the provider name that matches any provider without an entry
// of its own.
const Wildcard = "*"

// FailureMode says what the ratelimit service answers when its store fails.
type FailureMode string

const (
	FailAllow FailureMode = "allow" // answer OK (fail open)
	FailDeny  FailureMode = "deny"  // answer OVER_LIMIT (fail closed)
	FailError FailureMode = "error" // answer a gRPC UNAVAILABLE; Envoy's failure_mode_deny decides
)

// Bucket is one leaky bucket's size.
type Bucket struct {
	Capacity int64   `yaml:"capacity"`  // burst, in tokens
	LeakRate float64 `yaml:"leak_rate"` // tokens per second
}

// Tier is a service level that users reach through their roles.
type Tier struct {
	// Priority orders tiers when a user's roles match several: highest wins.
	Priority int `yaml:"priority"`
	// Roles are the role names (case-insensitive) that place a user in the tier.
	Roles []string `yaml:"roles"`
	// Buckets is each user's bucket per provider; the "*" entry applies to
	// providers without their own. A provider with neither has no user limit.
	Buckets map[string]Bucket `yaml:"buckets"`
}

// Policy is a parsed, valid policy file.
type Policy struct {
	Domain      string          `yaml:"domain"`
	FailureMode FailureMode     `yaml:"failure_mode"`
	DefaultTier string          `yaml:"default_tier"`
	Tiers       map[string]Tier `yaml:"tiers"`
	// Organisations is every organisation's shared pool per provider ("*"
	// for the rest).
	Organisations map[string]Bucket `yaml:"organisations"`
	// Providers is each provider's global pool ("*" for the rest).
	Providers map[string]Bucket `yaml:"providers"`
	// ReservationTTL bounds how long a reservation stays open before it is
	// settled at its estimate. Zero means 10 minutes.
	ReservationTTL Duration `yaml:"reservation_ttl"`
}

// Duration is a time.Duration written as "10m", "30s".
type Duration time.Duration

// UnmarshalYAML reads a duration string.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	v, err := time.ParseDuration(n.Value)
	if err != nil {
		return fmt.Errorf("line %d: %w", n.Line, err)
	}
	*d = Duration(v)
	return nil
}

//go:embed example.yaml
var example []byte

// Example returns the commented example policy shipped with the project; it
// is the embedded default of `leaky dev`.
func Example() []byte { return bytes.Clone(example) }

// Parse reads and validates a policy. Unknown keys are errors. Every problem
// is reported, each prefixed with name (the file's path).
func Parse(name string, data []byte) (*Policy, error) {
	var p Policy
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&p); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("%s: empty policy", name)
		}
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	p.setDefaults()
	if err := p.validate(); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return &p, nil
}

func (p *Policy) setDefaults() {
	if p.Domain == "" {
		p.Domain = Domain
	}
	if p.FailureMode == "" {
		p.FailureMode = FailError
	}
	if p.ReservationTTL == 0 {
		p.ReservationTTL = Duration(10 * time.Minute)
	}
}

func (p *Policy) validate() error {
	var errs []error
	if p.Domain != Domain {
		errs = append(errs, fmt.Errorf("domain %q: must be %q", p.Domain, Domain))
	}
	switch p.FailureMode {
	case FailAllow, FailDeny, FailError:
	default:
		errs = append(errs, fmt.Errorf("failure_mode %q: must be allow, deny or error", p.FailureMode))
	}
	if len(p.Tiers) == 0 {
		errs = append(errs, errors.New("tiers: at least one tier is required"))
	}
	if _, ok := p.Tiers[p.DefaultTier]; !ok {
		errs = append(errs, fmt.Errorf("default_tier %q: not a tier", p.DefaultTier))
	}
	roles := map[string]string{}
	for _, name := range slices.Sorted(mapsKeys(p.Tiers)) {
		t := p.Tiers[name]
		if name == "" || strings.ContainsAny(name, " \t\n") {
			errs = append(errs, fmt.Errorf("tier %q: name must be non-empty without spaces", name))
		}
		for _, r := range t.Roles {
			key := strings.ToUpper(r)
			if other, dup := roles[key]; dup && p.Tiers[other].Priority == t.Priority {
				errs = append(errs, fmt.Errorf("tier %q: role %q also maps to tier %q at the same priority", name, r, other))
			}
			roles[key] = name
		}
		errs = append(errs, validateBuckets("tiers."+name+".buckets", t.Buckets)...)
	}
	errs = append(errs, validateBuckets("organisations", p.Organisations)...)
	errs = append(errs, validateBuckets("providers", p.Providers)...)
	if p.ReservationTTL < 0 {
		errs = append(errs, errors.New("reservation_ttl: must not be negative"))
	}
	return errors.Join(errs...)
}

func validateBuckets(where string, m map[string]Bucket) []error {
	var errs []error
	for _, prov := range slices.Sorted(mapsKeys(m)) {
		b := m[prov]
		if prov == "" {
			errs = append(errs, fmt.Errorf("%s: empty provider name", where))
		}
		if b.Capacity < 1 {
			errs = append(errs, fmt.Errorf("%s.%s.capacity %d: must be at least 1", where, prov, b.Capacity))
		}
		if math.IsNaN(b.LeakRate) || b.LeakRate <= 0 || b.LeakRate > 1e6 {
			errs = append(errs, fmt.Errorf("%s.%s.leak_rate %v: must be above 0 and at most 1e6 tokens/s", where, prov, b.LeakRate))
		}
	}
	return errs
}

// TierFor returns the tier of a user with the given roles: the matching tier
// of highest priority (ties broken by name), or the default tier.
func (p *Policy) TierFor(roles []string) string {
	best, bestPrio := "", math.MinInt
	for name, t := range p.Tiers {
		for _, r := range t.Roles {
			if !slices.ContainsFunc(roles, func(s string) bool { return strings.EqualFold(s, r) }) {
				continue
			}
			if t.Priority > bestPrio || (t.Priority == bestPrio && name < best) {
				best, bestPrio = name, t.Priority
			}
		}
	}
	if best == "" {
		return p.DefaultTier
	}
	return best
}

// UserBucket is a tier's user bucket for a provider.
func (p *Policy) UserBucket(tier, provider string) (Bucket, bool) {
	t, ok := p.Tiers[tier]
	if !ok {
		return Bucket{}, false
	}
	return lookup(t.Buckets, provider)
}

// OrgBucket is an organisation's shared pool for a provider.
func (p *Policy) OrgBucket(provider string) (Bucket, bool) { return lookup(p.Organisations, provider) }

// ProviderBucket is a provider's global pool.
func (p *Policy) ProviderBucket(provider string) (Bucket, bool) { return lookup(p.Providers, provider) }

func lookup(m map[string]Bucket, provider string) (Bucket, bool) {
	if b, ok := m[provider]; ok {
		return b, true
	}
	b, ok := m[Wildcard]
	return b, ok
}

func mapsKeys[V any](m map[string]V) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}
