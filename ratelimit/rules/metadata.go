package rules

import (
	"google.golang.org/protobuf/types/known/structpb"
	"gopkg.in/yaml.v3"
)

// metadata reads a descriptor's metadata: any YAML mapping, nested mappings
// and lists included, as a google.protobuf.Struct (envoyproxy/ratelimit's
// representation: integers and floats become numbers, keys their scalar
// text). Null, absent or an empty mapping is nil.
func (p *parser) metadata(raw *yaml.Node) *structpb.Struct {
	if raw == nil {
		return nil
	}
	n, ok := p.enter(raw)
	if !ok {
		return nil
	}
	defer p.leave()
	if isNull(n) {
		return nil
	}
	if n.Kind != yaml.MappingNode {
		p.errorf(n.Line, "error parsing metadata: metadata must be a mapping, found %s", describe(n))
		return nil
	}
	s := p.metaStruct(n)
	if s == nil || len(s.Fields) == 0 {
		return nil
	}
	return s
}

// metaStruct converts an entered mapping node; nil after an error.
func (p *parser) metaStruct(n *yaml.Node) *structpb.Struct {
	fields := map[string]*structpb.Value{}
	seen := map[string]int{}
	var merges []*yaml.Node
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, ok := p.enter(n.Content[i])
		if !ok {
			return nil
		}
		p.leave()
		if k.Kind == yaml.ScalarNode && k.ShortTag() == "!!merge" {
			merges = append(merges, n.Content[i+1])
			continue
		}
		if k.Kind != yaml.ScalarNode {
			p.errorf(k.Line, "error parsing metadata: a key must be a scalar, found %s", describe(k))
			continue
		}
		if first, dup := seen[k.Value]; dup {
			p.errorf(k.Line, "error parsing metadata: duplicate key '%s' (first at line %d)", k.Value, first)
			continue
		}
		seen[k.Value] = k.Line
		if v := p.metaValue(n.Content[i+1]); v != nil {
			fields[k.Value] = v
		}
	}
	// Explicit keys win over merged ones; among merged mappings the first wins.
	for _, m := range merges {
		for _, src := range p.mergeSources(m) {
			if s := p.metaStruct(src); s != nil {
				for k, v := range s.Fields {
					if _, ok := fields[k]; !ok {
						fields[k] = v
					}
				}
			}
			p.leave()
		}
	}
	return &structpb.Struct{Fields: fields}
}

// mergeSources enters the mapping(s) a merge key refers to; the caller
// leaves each one returned.
func (p *parser) mergeSources(raw *yaml.Node) []*yaml.Node {
	m, ok := p.enter(raw)
	if !ok {
		return nil
	}
	defer p.leave()
	items := []*yaml.Node{m}
	if m.Kind == yaml.SequenceNode {
		items = m.Content
	}
	var out []*yaml.Node
	for _, it := range items {
		s, ok := p.enter(it)
		if !ok {
			break
		}
		if s.Kind != yaml.MappingNode {
			p.errorf(s.Line, "a merge key (<<) must refer to a mapping or a list of mappings")
			p.leave()
			continue
		}
		out = append(out, s)
	}
	return out
}

// metaValue converts any node to a Struct value; nil after an error.
func (p *parser) metaValue(raw *yaml.Node) *structpb.Value {
	n, ok := p.enter(raw)
	if !ok {
		return nil
	}
	defer p.leave()
	switch n.Kind {
	case yaml.MappingNode:
		if s := p.metaStruct(n); s != nil {
			return structpb.NewStructValue(s)
		}
		return nil
	case yaml.SequenceNode:
		list := &structpb.ListValue{Values: make([]*structpb.Value, 0, len(n.Content))}
		for _, item := range n.Content {
			v := p.metaValue(item)
			if v == nil {
				return nil
			}
			list.Values = append(list.Values, v)
		}
		return structpb.NewListValue(list)
	case yaml.ScalarNode:
		return scalarValue(n)
	}
	p.errorf(n.Line, "error parsing metadata: unsupported YAML node")
	return nil
}

// scalarValue converts a scalar by its resolved tag: null, booleans (YAML
// 1.1's yes, no, on, off too, as envoyproxy/ratelimit's YAML library reads
// them) and numbers keep their type (a number as a float64, as Struct holds
// them); everything else, timestamps included, is its text.
func scalarValue(n *yaml.Node) *structpb.Value {
	if b, ok := yaml11Bool(n); ok {
		return structpb.NewBoolValue(b)
	}
	switch n.ShortTag() {
	case "!!null":
		return structpb.NewNullValue()
	case "!!bool":
		var b bool
		if n.Decode(&b) == nil {
			return structpb.NewBoolValue(b)
		}
	case "!!int":
		var i int64
		if n.Decode(&i) == nil {
			return structpb.NewNumberValue(float64(i))
		}
		var u uint64
		if n.Decode(&u) == nil {
			return structpb.NewNumberValue(float64(u))
		}
	case "!!float":
		var f float64
		if n.Decode(&f) == nil {
			return structpb.NewNumberValue(f)
		}
	}
	return structpb.NewStringValue(n.Value)
}

// Metadata converts a descriptor's metadata node as a rule file's loader
// does (nil for null, absent or empty), for callers that read rule files
// with their own decoder, such as the control plane's RateLimitConfig
// translation. The error names file and line.
func Metadata(file string, n *yaml.Node) (*structpb.Struct, error) {
	if n == nil || n.Kind == 0 { // absent: a zero Node
		return nil, nil
	}
	p := &parser{file: file, names: map[string]bool{}}
	s := p.metadata(n)
	if len(p.errs) > 0 {
		return nil, p.errs[0]
	}
	return s, nil
}
