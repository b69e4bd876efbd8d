package xdsconfig

import (
	"fmt"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	rlconfv3 "github.com/envoyproxy/go-control-plane/ratelimit/config/ratelimit/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"gopkg.in/yaml.v3"

	"github.com/leakytokens/leaky/internal/policy"
)

// RateLimitConfigType is the type URL of envoyproxy/ratelimit's own xDS
// resource, one rate-limit domain each: what a control plane built for
// envoyproxy/ratelimit (Envoy Gateway's) serves.
const RateLimitConfigType = "type.googleapis.com/ratelimit.config.ratelimit.v3.RateLimitConfig"

// rlsPrefix starts the file name of every RateLimitConfig in a
// configuration, so that none takes the name of a Runtime or start file
// and a message names the resource: "RateLimitConfig/foo: …".
const rlsPrefix = "RateLimitConfig/"

// rlsFile is one RateLimitConfig as the rule file the loader reads.
type rlsFile struct {
	name   string // rlsPrefix + the resource's name (or unnamedName)
	domain string
	yaml   []byte
}

// decodeRLS converts every RateLimitConfig of resp into its rule file, in
// response order. The resources of one response are the whole set. A
// resource that does not unmarshal, two with one name, or one with the
// policy's domain is an error naming it, for the NACK.
func decodeRLS(resp *discoveryv3.DiscoveryResponse) ([]rlsFile, error) {
	out := make([]rlsFile, 0, len(resp.GetResources()))
	seen := map[string]int{}
	for i, a := range resp.GetResources() {
		cfg := &rlconfv3.RateLimitConfig{}
		if err := anypb.UnmarshalTo(a, cfg, proto.UnmarshalOptions{}); err != nil {
			return nil, fmt.Errorf("resource %d: not a RateLimitConfig: %w", i, err)
		}
		name := cfg.GetName()
		if name == "" {
			name = unnamedName(cfg)
		}
		if first, dup := seen[name]; dup {
			return nil, fmt.Errorf("resources %d and %d are both RateLimitConfig %q", first, i, name)
		}
		seen[name] = i
		if cfg.GetDomain() == "" {
			return nil, fmt.Errorf("%s%s: config file cannot have empty domain", rlsPrefix, name)
		}
		if cfg.GetDomain() == policy.Domain {
			return nil, fmt.Errorf("%s%s: domain %s is the policy's; it comes from the policy file, not a RateLimitConfig", rlsPrefix, name, policy.Domain)
		}
		data, err := rlsYAML(cfg)
		if err != nil {
			return nil, fmt.Errorf("%s%s: %w", rlsPrefix, name, err)
		}
		out = append(out, rlsFile{name: rlsPrefix + name, domain: cfg.GetDomain(), yaml: data})
	}
	return out, nil
}

// unnamedName names a RateLimitConfig without a name by its domain, stable
// across responses: "(unnamed, domain d)".
func unnamedName(cfg *rlconfv3.RateLimitConfig) string {
	return fmt.Sprintf("(unnamed, domain %s)", cfg.GetDomain())
}

// The rule file's YAML shape, field for field the proto's; omitempty
// leaves out what the proto leaves unset, so the loader's defaults and
// checks apply as to a hand-written file.
type (
	rlsRoot struct {
		Domain      string          `yaml:"domain"`
		Descriptors []rlsDescriptor `yaml:"descriptors,omitempty"`
	}
	rlsDescriptor struct {
		Key            string          `yaml:"key"`
		Value          string          `yaml:"value,omitempty"`
		RateLimit      *rlsLimit       `yaml:"rate_limit,omitempty"`
		Descriptors    []rlsDescriptor `yaml:"descriptors,omitempty"`
		ShadowMode     bool            `yaml:"shadow_mode,omitempty"`
		DetailedMetric bool            `yaml:"detailed_metric,omitempty"`
		QuotaMode      bool            `yaml:"quota_mode,omitempty"`
		Metadata       map[string]any  `yaml:"metadata,omitempty"`
	}
	rlsLimit struct {
		Unit            string       `yaml:"unit,omitempty"`
		RequestsPerUnit *uint32      `yaml:"requests_per_unit,omitempty"`
		Unlimited       bool         `yaml:"unlimited,omitempty"`
		Name            string       `yaml:"name,omitempty"`
		Replaces        []rlsReplace `yaml:"replaces,omitempty"`
	}
	rlsReplace struct {
		Name string `yaml:"name"`
	}
)

// rlsYAML renders cfg as a rule file, as envoyproxy/ratelimit's xDS mode
// does before its file loader runs: the unit by its enum name (UNKNOWN and
// an out-of-range number, printed as digits, are then invalid units),
// requests_per_unit always for a limited rule (0 refuses all), metadata
// as a mapping. An unlimited rule carries no unit when the proto's is
// UNKNOWN and no requests_per_unit when it is 0: the proto cannot leave
// them out, and envoyproxy/ratelimit ignores both there.
func rlsYAML(cfg *rlconfv3.RateLimitConfig) ([]byte, error) {
	return yaml.Marshal(rlsRoot{Domain: cfg.GetDomain(), Descriptors: rlsDescriptors(cfg.GetDescriptors())})
}

func rlsDescriptors(in []*rlconfv3.RateLimitDescriptor) []rlsDescriptor {
	if len(in) == 0 {
		return nil
	}
	out := make([]rlsDescriptor, len(in))
	for i, d := range in {
		out[i] = rlsDescriptor{
			Key: d.GetKey(), Value: d.GetValue(), RateLimit: rlsPolicy(d.GetRateLimit()),
			Descriptors: rlsDescriptors(d.GetDescriptors()),
			ShadowMode:  d.GetShadowMode(), DetailedMetric: d.GetDetailedMetric(), QuotaMode: d.GetQuotaMode(),
		}
		if m := d.GetMetadata(); len(m.GetFields()) > 0 {
			out[i].Metadata = m.AsMap()
		}
	}
	return out
}

func rlsPolicy(p *rlconfv3.RateLimitPolicy) *rlsLimit {
	if p == nil {
		return nil
	}
	l := &rlsLimit{Unlimited: p.GetUnlimited(), Name: p.GetName()}
	if rpu := p.GetRequestsPerUnit(); !l.Unlimited || rpu != 0 {
		l.RequestsPerUnit = &rpu
	}
	if !l.Unlimited || p.GetUnit() != rlconfv3.RateLimitUnit_UNKNOWN {
		l.Unit = p.GetUnit().String()
	}
	for _, r := range p.GetReplaces() {
		l.Replaces = append(l.Replaces, rlsReplace{Name: r.GetName()})
	}
	return l
}
