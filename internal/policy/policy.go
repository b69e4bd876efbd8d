// Package policy reads the Leaky Tokens policy file: the tiers, the bucket
// sizes per provider, the organisation and provider pools and the failure mode
// of domain leaky-tokens. The ratelimit service decides with it; the authz
// service maps roles to tiers with it. Both read it through Load and Watcher,
// the one loader: a file or a directory of files, validated whole.
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
	"github.com/leakytokens/leaky/ratelimit/gcra"
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

	limit gcra.Limit // built by Parse; the zero Limit for a hand-made Bucket
}

// Limit is the bucket as the GCRA algorithm runs it. Parse builds it for
// every bucket of a policy and refuses a policy with any bucket the
// algorithm cannot represent, so a Bucket from a parsed Policy always has a
// valid Limit and the request path never has to build (or fail to build)
// one. A Bucket made by hand has the zero Limit, which gcra refuses.
func (b Bucket) Limit() gcra.Limit { return b.limit }

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
	// Providers is each provider's global pool, by name. It is also the
	// list of providers authz recognises and names in x-leaky-provider, so
	// at least one is required and "*" is refused: a request for a provider
	// not listed here carries no descriptor and is not limited.
	Providers map[string]Bucket `yaml:"providers"`
	// ReservationTTL bounds how long a reservation stays open before it is
	// settled at its estimate. Zero means 10 minutes.
	ReservationTTL Duration `yaml:"reservation_ttl"`
	// MaxClientsPerUser bounds the OAuth2 client_credentials clients one
	// user may own (authz refuses the next with 409). A client's requests
	// are charged to its owner's budgets, so the bound is on what the
	// store keeps, not on the budgets. Zero means DefaultMaxClientsPerUser.
	MaxClientsPerUser int `yaml:"max_clients_per_user"`
	// Gateway is how the gateway calls authz and ratelimit and reaches the
	// providers; Parse fills what the file leaves out from DefaultGateway.
	Gateway Gateway `yaml:"gateway"`
	// Quotas is the optional allowance per window of each tier's users and
	// of organisations (quota.go); nil means no quotas.
	Quotas *Quotas `yaml:"quotas"`
	// Metering is what the metering (ext_proc) may change in a provider
	// request; Parse fills what the file leaves out from DefaultMetering.
	Metering Metering `yaml:"metering"`
}

// DefaultMaxClientsPerUser is max_clients_per_user when the policy sets
// none, and MaxMaxClientsPerUser the most it may say.
const (
	DefaultMaxClientsPerUser = 10
	MaxMaxClientsPerUser     = 1000
)

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

// Parse reads and validates a policy. Unknown keys are errors, and so is
// anything the services could not enforce (see validate). Every problem is
// reported, each prefixed with name (the file's path).
func Parse(name string, data []byte) (*Policy, error) {
	// The gateway's defaults go in before decoding, so that a field the
	// file leaves out keeps its default while one it sets, even to zero,
	// is validated as written (retries: 0 is a valid choice).
	p := Policy{Gateway: DefaultGateway(), Metering: DefaultMetering()}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&p); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("%s: empty policy", name)
		}
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	// A second document would be silently ignored: refuse it.
	var more yaml.Node
	if err := dec.Decode(&more); !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("%s: more than one YAML document; a policy is one document", name)
	}
	p.setDefaults()
	if errs := p.validate(); len(errs) > 0 {
		for i, err := range errs {
			errs[i] = fmt.Errorf("%s: %w", name, err)
		}
		return nil, errors.Join(errs...)
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
	if p.MaxClientsPerUser == 0 {
		p.MaxClientsPerUser = DefaultMaxClientsPerUser
	}
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
