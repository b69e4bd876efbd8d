package rules

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// ParseError is one problem found in one rule file. Parse and NewSet return
// every ParseError they find, joined with errors.Join; use errors.As to reach
// them.
type ParseError struct {
	File string // the name given to Parse
	Line int    // 1-based line of the offending YAML node; 0 when none applies
	Msg  string // what is wrong, in envoyproxy/ratelimit's wording where it has one
}

// Error returns "file:line: msg", or "file: msg" when Line is 0.
func (e *ParseError) Error() string {
	if e.Line > 0 {
		return fmt.Sprintf("%s:%d: %s", e.File, e.Line, e.Msg)
	}
	return e.File + ": " + e.Msg
}

// Keys each YAML mapping of a rule file may hold. Parse rejects any other key
// ("misspelled" keys), at the level where it appears.
var (
	rootKeys       = []string{"domain", "descriptors", "name"}
	descriptorKeys = []string{"key", "value", "rate_limit", "descriptors", "shadow_mode",
		"detailed_metric", "value_to_metric", "share_threshold", "quota_mode", "metadata"}
	rateLimitKeys = []string{"unit", "requests_per_unit", "unlimited", "name", "replaces"}
	replacesKeys  = []string{"name"}
)

const (
	maxDepth = 200     // YAML nesting, counting aliases followed
	maxNodes = 1 << 20 // YAML nodes visited, counting every alias expansion
)

// Parse reads one envoyproxy/ratelimit rule file: a YAML mapping with a
// domain and a list of (possibly nested) descriptors. filename only labels
// errors. Parse enforces envoyproxy/ratelimit's validation and is stricter in
// the ways listed in the package documentation; it reports every problem it
// finds, each as a *ParseError naming filename, joined with errors.Join. On
// error the Config is nil.
func Parse(filename string, data []byte) (*Config, error) {
	c, refs, errs := parseFile(filename, data)
	errs = append(errs, c.unknownNames(refs)...)
	if err := joinByLine(errs); err != nil {
		return nil, err
	}
	return c, nil
}

// parseFile reads one rule file without checking that the names its
// replaces entries refer to exist (a merged domain checks them across its
// files). The Config is partial when there are errors, nil only when the
// file is not YAML.
func parseFile(filename string, data []byte) (*Config, []nameRef, []*ParseError) {
	p := &parser{file: filename, names: map[string]bool{}}
	root, extra, err := decodeOne(data)
	if err != nil {
		return nil, nil, []*ParseError{{File: filename, Msg: "error loading config file: " + err.Error()}}
	}
	if extra > 0 {
		return nil, nil, []*ParseError{{File: filename, Line: extra,
			Msg: "error loading config file: a rule file holds one YAML document, found a second"}}
	}
	c := &Config{File: filename}
	p.root(c, root)
	c.names = p.names
	if p.overflow {
		return c, nil, p.errs // the walk was cut short: its names are incomplete
	}
	return c, p.refs, p.errs
}

// unknownNames reports each ref naming no rate_limit of c.
func (c *Config) unknownNames(refs []nameRef) []*ParseError {
	var errs []*ParseError
	for _, ref := range refs {
		if c == nil || !c.names[ref.name] {
			domain := ""
			if c != nil {
				domain = c.Domain
			}
			errs = append(errs, &ParseError{File: ref.file, Line: ref.line,
				Msg: fmt.Sprintf("replaces names '%s', but no rate_limit in domain '%s' has that name", ref.name, domain)})
		}
	}
	return errs
}

// joinByLine joins errs sorted by line (stable: one file's problems in the
// order found), nil when there are none.
func joinByLine(errs []*ParseError) error {
	if len(errs) == 0 {
		return nil
	}
	slices.SortStableFunc(errs, func(a, b *ParseError) int { return cmp.Compare(a.Line, b.Line) })
	out := make([]error, len(errs))
	for i, e := range errs {
		out[i] = e
	}
	return errors.Join(out...)
}

// decodeOne returns the content node of the file's YAML document, nil for a
// file without one, and the line of a second document (0 when there is none).
func decodeOne(data []byte) (root *yaml.Node, extra int, err error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, 0, nil
		}
		return nil, 0, err
	}
	var next yaml.Node
	if err := dec.Decode(&next); !errors.Is(err, io.EOF) {
		if err != nil {
			return nil, 0, err
		}
		return nil, max(next.Line, 1), nil
	}
	if doc.Kind == yaml.DocumentNode {
		if len(doc.Content) == 0 {
			return nil, 0, nil
		}
		return doc.Content[0], 0, nil
	}
	return &doc, 0, nil
}

type parser struct {
	file     string
	errs     []*ParseError
	nodes    int
	depth    int
	overflow bool
	names    map[string]bool // rate_limit names in the file
	refs     []nameRef       // replaces entries, checked against names at the end
}

// nameRef is a replaces entry: the name it refers to, where it is.
type nameRef struct {
	name string
	file string
	line int
}

// errorf records a problem. Once a budget is exhausted it records nothing
// more: what follows is the fallout of the truncated walk.
func (p *parser) errorf(line int, format string, args ...any) {
	if p.overflow {
		return
	}
	p.errs = append(p.errs, &ParseError{File: p.file, Line: line, Msg: fmt.Sprintf(format, args...)})
}

// enter follows aliases and charges the node and depth budgets; ok is false
// once a budget is exhausted (an alias bomb or a self-referencing anchor), and
// the problem is reported once. Every successful enter needs a leave.
func (p *parser) enter(n *yaml.Node) (*yaml.Node, bool) {
	if p.overflow {
		return nil, false
	}
	for n != nil && n.Kind == yaml.AliasNode {
		p.nodes++
		n = n.Alias
	}
	if n == nil {
		return nil, false
	}
	p.nodes++
	if p.nodes > maxNodes || p.depth >= maxDepth {
		p.errorf(n.Line, "config too large or too deeply nested (aliases included)")
		p.overflow = true
		return nil, false
	}
	p.depth++
	return n, true
}

func (p *parser) leave() { p.depth-- }

func isNull(n *yaml.Node) bool {
	return n == nil || (n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null")
}

// fields checks that n is a mapping whose keys are unique strings drawn from
// allowed, follows YAML merge keys ("<<"), and returns the values by key.
func (p *parser) fields(n *yaml.Node, what string, allowed []string) map[string]*yaml.Node {
	out := map[string]*yaml.Node{}
	p.collect(n, what, allowed, out, map[string]int{})
	return out
}

func (p *parser) collect(n *yaml.Node, what string, allowed []string, out map[string]*yaml.Node, seen map[string]int) {
	var merges []*yaml.Node
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, ok := p.enter(n.Content[i])
		if !ok {
			return
		}
		p.leave()
		v := n.Content[i+1]
		if k.Kind == yaml.ScalarNode && k.ShortTag() == "!!merge" {
			merges = append(merges, v)
			continue
		}
		if k.Kind != yaml.ScalarNode || k.ShortTag() != "!!str" {
			p.errorf(k.Line, "config error, key is not of type string: %s", describe(k))
			continue
		}
		if !slices.Contains(allowed, k.Value) {
			p.errorf(k.Line, "config error, unknown key '%s' (%s takes %s)", k.Value, what, strings.Join(allowed, ", "))
			continue
		}
		if first, dup := seen[k.Value]; dup {
			p.errorf(k.Line, "duplicate key '%s' in %s (first at line %d)", k.Value, what, first)
			continue
		}
		seen[k.Value] = k.Line
		out[k.Value] = v
	}
	// Explicit keys win over merged ones; among merged mappings the first wins.
	for _, m := range merges {
		m, ok := p.enter(m)
		if !ok {
			return
		}
		srcs := []*yaml.Node{m}
		if m.Kind == yaml.SequenceNode {
			srcs = m.Content
		}
		for _, s := range srcs {
			s, ok := p.enter(s)
			if !ok {
				p.leave()
				return
			}
			if s.Kind != yaml.MappingNode {
				p.errorf(s.Line, "a merge key (<<) must refer to a mapping or a list of mappings")
			} else {
				inner := map[string]*yaml.Node{}
				p.collect(s, what, allowed, inner, map[string]int{})
				for k, v := range inner {
					if _, ok := out[k]; !ok {
						out[k] = v
						seen[k] = s.Line
					}
				}
			}
			p.leave()
		}
		p.leave()
	}
}

// describe renders a node for a message: a scalar as its text, anything else
// by kind.
func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.ScalarNode:
		v := n.Value
		if r := []rune(v); len(r) > 64 {
			v = string(r[:64]) + "…"
		}
		if n.Style&(yaml.DoubleQuotedStyle|yaml.SingleQuotedStyle) != 0 {
			return strconv.Quote(v)
		}
		return v
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	}
	return "a YAML node"
}

// str reads a scalar as its literal text, as envoyproxy/ratelimit's YAML
// library does for string fields (so `value: 10` is "10"); null or absent is "".
func (p *parser) str(raw *yaml.Node, field string) string {
	n, ok := p.enter(raw)
	if !ok {
		return ""
	}
	defer p.leave()
	if isNull(n) {
		return ""
	}
	if n.Kind != yaml.ScalarNode {
		p.errorf(n.Line, "config error, %s must be a string, found %s", field, describe(n))
		return ""
	}
	return n.Value
}

// bool reads a boolean. Besides true and false it accepts the unquoted YAML
// 1.1 forms (yes, no, on, off, y, n) that envoyproxy/ratelimit's YAML library
// reads as booleans. Null or absent is false. ok is false, with an error
// recorded, when the value is not a boolean.
func (p *parser) bool(raw *yaml.Node, field string) (v, ok bool) {
	n, entered := p.enter(raw)
	if !entered {
		return false, true
	}
	defer p.leave()
	if isNull(n) {
		return false, true
	}
	if n.Kind == yaml.ScalarNode {
		if n.ShortTag() == "!!bool" && n.Decode(&v) == nil {
			return v, true
		}
		if v, ok := yaml11Bool(n); ok {
			return v, true
		}
	}
	p.errorf(n.Line, "config error, %s must be true or false, found %s", field, describe(n))
	return false, false
}

// yaml11Bool reads the unquoted YAML 1.1 booleans (yes, no, on, off, y, n in
// their three cases) that YAML 1.2 reads as strings.
func yaml11Bool(n *yaml.Node) (v, ok bool) {
	if n.Style != 0 || n.ShortTag() != "!!str" {
		return false, false
	}
	switch n.Value {
	case "y", "Y", "yes", "Yes", "YES", "on", "On", "ON":
		return true, true
	case "n", "N", "no", "No", "NO", "off", "Off", "OFF":
		return false, true
	}
	return false, false
}

// flag reads an optional boolean field of f.
func (p *parser) flag(f map[string]*yaml.Node, field string) bool {
	v, _ := p.bool(f[field], field)
	return v
}

// uint32 reads an unsigned 32-bit integer. present is false when the field is
// absent or null; it is true, with an error recorded, when it is malformed.
func (p *parser) uint32(raw *yaml.Node, field string) (v uint32, present bool) {
	n, ok := p.enter(raw)
	if !ok {
		return 0, false
	}
	defer p.leave()
	if isNull(n) {
		return 0, false
	}
	if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!int" || n.Decode(&v) != nil {
		p.errorf(n.Line, "config error, %s must be an integer from 0 to 4294967295, found %s", field, describe(n))
		return 0, true
	}
	return v, true
}
