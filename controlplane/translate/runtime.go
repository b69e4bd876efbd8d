package translate

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"unicode/utf8"

	runtimev3 "github.com/envoyproxy/go-control-plane/envoy/service/runtime/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	rlconfv3 "github.com/envoyproxy/go-control-plane/ratelimit/config/ratelimit/v3"
	"google.golang.org/protobuf/types/known/structpb"
	"gopkg.in/yaml.v3"

	"github.com/leakytokens/leaky/controlplane/model"
	"github.com/leakytokens/leaky/ratelimit/rules"
)

// runtime is the Runtime resource that carries every configuration file
// (the policy and the envoyproxy/ratelimit domain files) as text, for the
// ratelimit service and authz to load with policy.FromContents.
func runtime(m *model.Model) (*runtimev3.Runtime, error) {
	files := m.Config.Files()
	fields := make(map[string]*structpb.Value, len(files))
	for name, data := range files {
		if !utf8.Valid(data) {
			return nil, fmt.Errorf("translate: configuration file %s is not UTF-8 text", name)
		}
		fields[name] = structpb.NewStringValue(string(data))
	}
	return &runtimev3.Runtime{
		Name: model.RuntimeName,
		Layer: &structpb.Struct{Fields: map[string]*structpb.Value{
			model.RuntimeFilesField: structpb.NewStructValue(&structpb.Struct{Fields: fields}),
		}},
	}, nil
}

// errInexpressible marks a valid envoyproxy/ratelimit file that the
// RateLimitConfig resource cannot carry: value_to_metric, share_threshold.
var errInexpressible = errors.New("RateLimitConfig cannot express it")

// rateLimitConfigs converts each envoyproxy/ratelimit domain file of the
// model into a RateLimitConfig named after its domain, sorted by domain. A
// file that is not valid refuses the translation; a valid one that the
// resource cannot express is left out (the Runtime carries every file as
// text, so our ratelimit service still gets it; RateLimitConfigGaps names
// what was left out).
func rateLimitConfigs(m *model.Model) ([]types.Resource, error) {
	others := m.Config.Others()
	byDomain := map[string]*rlconfv3.RateLimitConfig{}
	for _, name := range slices.Sorted(maps.Keys(others)) {
		c, err := rateLimitConfig(name, others[name])
		if errors.Is(err, errInexpressible) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("translate: ratelimit domain file %s: %w", name, err)
		}
		if _, dup := byDomain[c.Domain]; dup {
			return nil, fmt.Errorf("translate: ratelimit domain file %s: domain %q is also in another file", name, c.Domain)
		}
		byDomain[c.Domain] = c
	}
	out := make([]types.Resource, 0, len(byDomain))
	for _, d := range slices.Sorted(maps.Keys(byDomain)) {
		out = append(out, byDomain[d])
	}
	return out, nil
}

// RateLimitConfigGaps lists the envoyproxy/ratelimit domain files of the
// model that have no RateLimitConfig resource because the resource cannot
// express them, each with the reason, for the control plane to log: an
// envoyproxy/ratelimit instance fed over xDS would not get those domains.
func RateLimitConfigGaps(m *model.Model) []error {
	others := m.Config.Others()
	var gaps []error
	for _, name := range slices.Sorted(maps.Keys(others)) {
		if _, err := rateLimitConfig(name, others[name]); errors.Is(err, errInexpressible) {
			gaps = append(gaps, fmt.Errorf("ratelimit domain file %s: %w", name, err))
		}
	}
	return gaps
}

// rlFile is an envoyproxy/ratelimit domain file as YAML writes it.
type rlFile struct {
	Name        string         `yaml:"name"` // Envoy Gateway's dumps carry one; not part of the resource
	Domain      string         `yaml:"domain"`
	Descriptors []rlDescriptor `yaml:"descriptors"`
}

type rlDescriptor struct {
	Key            string         `yaml:"key"`
	Value          string         `yaml:"value"`
	RateLimit      *rlLimit       `yaml:"rate_limit"`
	Descriptors    []rlDescriptor `yaml:"descriptors"`
	ShadowMode     bool           `yaml:"shadow_mode"`
	DetailedMetric bool           `yaml:"detailed_metric"`
	QuotaMode      bool           `yaml:"quota_mode"`
	Metadata       yaml.Node      `yaml:"metadata"`
	// Keys the file format has and RateLimitConfig has not: a file that
	// sets one is left out rather than translated into other limits.
	ValueToMetric  bool `yaml:"value_to_metric"`
	ShareThreshold bool `yaml:"share_threshold"`
}

type rlLimit struct {
	Unit            string `yaml:"unit"`
	RequestsPerUnit uint32 `yaml:"requests_per_unit"`
	Unlimited       bool   `yaml:"unlimited"`
	Name            string `yaml:"name"`
	Replaces        []struct {
		Name string `yaml:"name"`
	} `yaml:"replaces"`
}

// rateLimitConfig converts one domain file, named name. Unknown keys are
// errors, and so is anything RateLimitConfig cannot express
// (value_to_metric, share_threshold), naming where.
func rateLimitConfig(name string, data []byte) (*rlconfv3.RateLimitConfig, error) {
	var f rlFile
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&f); err != nil {
		return nil, err
	}
	if f.Domain == "" {
		return nil, fmt.Errorf("no domain")
	}
	ds, err := descriptors(name, "descriptors", f.Descriptors)
	if err != nil {
		return nil, err
	}
	return &rlconfv3.RateLimitConfig{Name: f.Domain, Domain: f.Domain, Descriptors: ds}, nil
}

// descriptors converts a list of descriptors found at path.
func descriptors(file, path string, in []rlDescriptor) ([]*rlconfv3.RateLimitDescriptor, error) {
	out := make([]*rlconfv3.RateLimitDescriptor, 0, len(in))
	for i, d := range in {
		at := fmt.Sprintf("%s[%d]", path, i)
		for _, unsupported := range []struct {
			key string
			set bool
		}{{"value_to_metric", d.ValueToMetric}, {"share_threshold", d.ShareThreshold}} {
			if unsupported.set {
				return nil, fmt.Errorf("%s.%s: RateLimitConfig has no such field: %w", at, unsupported.key, errInexpressible)
			}
		}
		nested, err := descriptors(file, at+".descriptors", d.Descriptors)
		if err != nil {
			return nil, err
		}
		limit, err := ratePolicy(at+".rate_limit", d.RateLimit)
		if err != nil {
			return nil, err
		}
		meta, err := rules.Metadata(file, &d.Metadata)
		if err != nil {
			return nil, fmt.Errorf("%s.metadata: %w", at, err)
		}
		md := &rlconfv3.RateLimitDescriptor{
			Key: d.Key, Value: d.Value, RateLimit: limit, Descriptors: nested,
			ShadowMode: d.ShadowMode, DetailedMetric: d.DetailedMetric, QuotaMode: d.QuotaMode, Metadata: meta,
		}
		out = append(out, md)
	}
	return out, nil
}

// ratePolicy converts one rate_limit block found at path; nil stays nil.
func ratePolicy(path string, l *rlLimit) (*rlconfv3.RateLimitPolicy, error) {
	if l == nil {
		return nil, nil
	}
	p := &rlconfv3.RateLimitPolicy{RequestsPerUnit: l.RequestsPerUnit, Unlimited: l.Unlimited, Name: l.Name}
	if l.Unit != "" {
		u, ok := rlconfv3.RateLimitUnit_value[strings.ToUpper(l.Unit)]
		if !ok || u == int32(rlconfv3.RateLimitUnit_UNKNOWN) {
			return nil, fmt.Errorf("%s.unit %q: not a unit (second, minute, hour, day, week, month, year)", path, l.Unit)
		}
		p.Unit = rlconfv3.RateLimitUnit(u)
	}
	for _, r := range l.Replaces {
		p.Replaces = append(p.Replaces, &rlconfv3.RateLimitReplace{Name: r.Name})
	}
	return p, nil
}
