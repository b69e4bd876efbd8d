package controlplane

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/leakytokens/leaky/internal/policy"
)

// Tier is a tier as the admin API reads and writes it: the policy's tier
// in JSON.
type Tier struct {
	Priority int               `json:"priority" yaml:"priority"`
	Roles    []string          `json:"roles" yaml:"roles"`
	Buckets  map[string]Bucket `json:"buckets" yaml:"buckets"`
}

// Bucket is one leaky bucket: capacity in tokens, leak_rate in tokens per
// second.
type Bucket struct {
	Capacity int64   `json:"capacity" yaml:"capacity"`
	LeakRate float64 `json:"leak_rate" yaml:"leak_rate"`
}

// tiersOf converts the policy's tiers.
func tiersOf(p *policy.Policy) map[string]Tier {
	out := make(map[string]Tier, len(p.Tiers))
	for name, t := range p.Tiers {
		bt := Tier{Priority: t.Priority, Roles: slices.Clone(t.Roles), Buckets: make(map[string]Bucket, len(t.Buckets))}
		if bt.Roles == nil {
			bt.Roles = []string{}
		}
		for prov, b := range t.Buckets {
			bt.Buckets[prov] = Bucket{Capacity: b.Capacity, LeakRate: b.LeakRate}
		}
		out[name] = bt
	}
	return out
}

// setTier returns the policy document doc with tiers.<name> replaced by t
// (added when missing), editing the YAML node tree so that every comment
// outside the tier is kept, and those inside it on keys the new tier
// still has. It does not validate the result.
func setTier(doc []byte, name string, t Tier) ([]byte, error) {
	var root yaml.Node
	if err := yaml.Unmarshal(doc, &root); err != nil {
		return nil, fmt.Errorf("read the policy: %w", err)
	}
	if root.Kind != yaml.DocumentNode || len(root.Content) != 1 || root.Content[0].Kind != yaml.MappingNode {
		return nil, errors.New("the policy is not a YAML mapping")
	}
	top := root.Content[0]
	tiers := mappingValue(top, "tiers")
	if tiers == nil {
		tiers = &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
		top.Content = append(top.Content, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: "tiers"}, tiers)
	} else if tiers.Kind != yaml.MappingNode {
		return nil, errors.New("tiers: not a mapping")
	}
	val, err := tierNode(t)
	if err != nil {
		return nil, err
	}
	if i := mappingIndex(tiers, name); i >= 0 {
		carryComments(tiers.Content[i+1], val)
		tiers.Content[i+1] = val
	} else {
		tiers.Content = append(tiers.Content, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: name}, val)
	}
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(&root); err != nil {
		return nil, fmt.Errorf("write the policy: %w", err)
	}
	if err := enc.Close(); err != nil {
		return nil, fmt.Errorf("write the policy: %w", err)
	}
	return keepBlankLines(doc, buf.Bytes()), nil
}

// keepBlankLines puts back into out the blank lines of orig that yaml.v3
// drops: a line of orig that follows a blank line is found again in out,
// in order, and gets its blank line back. Lines of orig that out no longer
// has are passed over.
func keepBlankLines(orig, out []byte) []byte {
	ol := strings.Split(string(orig), "\n")
	lines := strings.Split(string(out), "\n")
	blankBefore := make([]bool, len(lines))
	pos := 0
	for i := 1; i < len(ol); i++ {
		anchor := strings.TrimSpace(ol[i])
		if strings.TrimSpace(ol[i-1]) != "" || anchor == "" {
			continue
		}
		for j := pos; j < len(lines); j++ {
			if strings.TrimSpace(lines[j]) == anchor {
				blankBefore[j], pos = j > 0, j+1
				break
			}
		}
	}
	var b strings.Builder
	for j, l := range lines {
		if blankBefore[j] && strings.TrimSpace(lines[j-1]) != "" {
			b.WriteString("\n")
		}
		b.WriteString(l)
		if j < len(lines)-1 {
			b.WriteString("\n")
		}
	}
	return []byte(b.String())
}

// tierNode encodes t as the example policy writes a tier: roles as a flow
// sequence, each bucket as a flow mapping, buckets sorted by provider.
func tierNode(t Tier) (*yaml.Node, error) {
	if t.Roles == nil {
		t.Roles = []string{}
	}
	var n yaml.Node
	if err := n.Encode(struct {
		Priority int      `yaml:"priority"`
		Roles    []string `yaml:"roles"`
	}{t.Priority, t.Roles}); err != nil {
		return nil, fmt.Errorf("encode the tier: %w", err)
	}
	n.Content[3].Style = yaml.FlowStyle // roles
	buckets := &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
	for _, prov := range slices.Sorted(maps.Keys(t.Buckets)) {
		bk := t.Buckets[prov]
		b := &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map", Style: yaml.FlowStyle, Content: []*yaml.Node{
			scalar("capacity", "!!str"), scalar(strconv.FormatInt(bk.Capacity, 10), "!!int"),
			scalar("leak_rate", "!!str"), number(bk.LeakRate)}}
		key := &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: prov}
		if prov == policy.Wildcard {
			key.Style = yaml.DoubleQuotedStyle // as the example writes it; * alone is an alias
		}
		buckets.Content = append(buckets.Content, key, b)
	}
	n.Content = append(n.Content, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: "buckets"}, buckets)
	return &n, nil
}

func scalar(v, tag string) *yaml.Node { return &yaml.Node{Kind: yaml.ScalarNode, Tag: tag, Value: v} }

// number writes f as a person would: 40, 0.5, 1000000 (not 1e+06).
func number(f float64) *yaml.Node {
	if f == math.Trunc(f) && math.Abs(f) < 1e15 {
		return scalar(strconv.FormatFloat(f, 'f', -1, 64), "!!int")
	}
	return scalar(strconv.FormatFloat(f, 'g', -1, 64), "!!float")
}

// carryComments copies the comments (and key styles) of old onto new
// where new has none: the node's own, and, in mappings, those of each key
// new still has, recursively.
func carryComments(old, new *yaml.Node) {
	if new.HeadComment == "" && new.LineComment == "" && new.FootComment == "" {
		new.HeadComment, new.LineComment, new.FootComment = old.HeadComment, old.LineComment, old.FootComment
	}
	if old.Kind != yaml.MappingNode || new.Kind != yaml.MappingNode {
		return
	}
	for i := 0; i+1 < len(new.Content); i += 2 {
		j := mappingIndex(old, new.Content[i].Value)
		if j < 0 {
			continue
		}
		ok, nk := old.Content[j], new.Content[i]
		nk.HeadComment, nk.LineComment, nk.FootComment = ok.HeadComment, ok.LineComment, ok.FootComment
		if ok.Style&(yaml.DoubleQuotedStyle|yaml.SingleQuotedStyle) != 0 {
			nk.Style = ok.Style
		}
		carryComments(old.Content[j+1], new.Content[i+1])
	}
}

// mappingIndex is the index in m.Content of the key named key, or -1.
func mappingIndex(m *yaml.Node, key string) int {
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Kind == yaml.ScalarNode && m.Content[i].Value == key {
			return i
		}
	}
	return -1
}

// mappingValue is the value of key in m, or nil.
func mappingValue(m *yaml.Node, key string) *yaml.Node {
	if i := mappingIndex(m, key); i >= 0 {
		return m.Content[i+1]
	}
	return nil
}
