package rules

import (
	"strings"

	"gopkg.in/yaml.v3"
)

// root reads the top-level mapping into c. n is nil for an empty file.
func (p *parser) root(c *Config, raw *yaml.Node) {
	n, ok := p.enter(raw)
	if !ok || isNull(n) {
		if !p.overflow {
			p.errorf(0, "config file cannot have empty domain")
		}
		if ok {
			p.leave()
		}
		return
	}
	defer p.leave()
	if n.Kind != yaml.MappingNode {
		p.errorf(n.Line, "config error, a rule file is a mapping with domain and descriptors, found %s", describe(n))
		return
	}
	f := p.fields(n, "the file", rootKeys)
	c.Domain = p.str(f["domain"], "domain")
	c.Name = p.str(f["name"], "name")
	if c.Domain == "" {
		p.errorf(lineOf(f["domain"], n), "config file cannot have empty domain")
	}
	c.root = p.level(f["descriptors"], c.Domain+".")
}

// level reads a descriptors list. parentKey is the dotted path of the
// enclosing rules, ending in ".", for duplicate-key messages.
func (p *parser) level(raw *yaml.Node, parentKey string) level {
	var lvl level
	if raw == nil {
		return lvl
	}
	n, ok := p.enter(raw)
	if !ok {
		return lvl
	}
	defer p.leave()
	if isNull(n) {
		return lvl
	}
	if n.Kind != yaml.SequenceNode {
		p.errorf(n.Line, "config error, descriptors must be a list of descriptors, found %s", describe(n))
		return lvl
	}
	for _, item := range n.Content {
		p.descriptor(&lvl, item, parentKey)
	}
	return lvl
}

// descriptor reads one descriptor mapping, with its nested descriptors, and
// adds it to lvl.
func (p *parser) descriptor(lvl *level, raw *yaml.Node, parentKey string) {
	n, ok := p.enter(raw)
	if !ok {
		return
	}
	defer p.leave()
	if n.Kind != yaml.MappingNode {
		p.errorf(n.Line, "config error, yaml file contains list of type other than map: %s", describe(n))
		return
	}
	f := p.fields(n, "a descriptor", descriptorKeys)
	r := &rule{
		line:          n.Line,
		file:          p.file,
		key:           p.str(f["key"], "key"),
		value:         p.str(f["value"], "value"),
		shadow:        p.flag(f, "shadow_mode"),
		quota:         p.flag(f, "quota_mode"),
		detailed:      p.flag(f, "detailed_metric"),
		valueToMetric: p.flag(f, "value_to_metric"),
		share:         p.flag(f, "share_threshold"),
		metadata:      p.metadata(f["metadata"]),
	}
	if r.key == "" {
		p.errorf(lineOf(f["key"], n), "descriptor has empty key")
	}
	final := r.key
	if r.value != "" {
		final += "_" + r.value
	}
	if strings.Contains(r.value, "*") {
		r.wildcard = true
		r.parts = strings.Split(r.value, "*")
	}
	if r.share && !r.wildcard {
		p.errorf(lineOf(f["share_threshold"], n),
			"share_threshold can only be used with wildcard values (containing '*'), but found key '%s'", final)
	}
	r.limit = p.rateLimit(f["rate_limit"])
	r.children = p.level(f["descriptors"], parentKey+final+".")
	if r.key != "" {
		p.add(lvl, r, parentKey+final)
	}
}

// add registers r in lvl, rejecting a second rule with the same key and value.
func (p *parser) add(lvl *level, r *rule, fullKey string) {
	if prev := lvl.add(r); prev != nil {
		p.errorf(r.line, "duplicate descriptor composite key '%s' (first at line %d)", fullKey, prev.line)
	}
}

// add registers r in l unless l holds a rule with the same key and value,
// which it returns. Wildcard rules are tried in the order added.
func (l *level) add(r *rule) (prev *rule) {
	if r.value == "" {
		if l.defaults == nil {
			l.defaults = map[string]*rule{}
		}
		if prev = l.defaults[r.key]; prev == nil {
			l.defaults[r.key] = r
			l.order = append(l.order, r)
		}
		return prev
	}
	if l.exact == nil {
		l.exact = map[Entry]*rule{}
	}
	e := Entry{r.key, r.value}
	if prev = l.exact[e]; prev == nil {
		l.exact[e] = r
		l.order = append(l.order, r)
		if r.wildcard {
			l.wildcards = append(l.wildcards, r)
		}
	}
	return prev
}

// rateLimit reads a rate_limit block; nil when absent or null.
func (p *parser) rateLimit(raw *yaml.Node) *ruleLimit {
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
		p.errorf(n.Line, "config error, rate_limit must be a mapping, found %s", describe(n))
		return nil
	}
	f := p.fields(n, "rate_limit", rateLimitKeys)
	unlimited, ok := p.bool(f["unlimited"], "unlimited")
	rl := &ruleLimit{unlimited: unlimited, name: p.str(f["name"], "name")}
	unitText := p.str(f["unit"], "unit")
	rpu, hasRPU := p.uint32(f["requests_per_unit"], "requests_per_unit")
	switch {
	case !ok:
		// The other checks depend on whether the limit is unlimited.
	case rl.unlimited:
		if unitText != "" {
			p.errorf(lineOf(f["unit"], n), "should not specify rate limit unit when unlimited")
		}
		if hasRPU {
			p.errorf(lineOf(f["requests_per_unit"], n), "should not specify requests_per_unit when unlimited")
		}
	default:
		u, valid := ParseUnit(unitText)
		if !valid {
			p.errorf(lineOf(f["unit"], n),
				"invalid rate limit unit '%s' (want second, minute, hour, day, week, month or year)", unitText)
		}
		if !hasRPU {
			p.errorf(n.Line, "requests_per_unit is required unless unlimited is true")
		}
		rl.unit, rl.requestsPerUnit = u, rpu
	}
	rl.replaces = p.replaces(f["replaces"], rl.name)
	if rl.name != "" {
		p.names[rl.name] = true
	}
	return rl
}

// replaces reads a replaces list of {name: …} mappings.
func (p *parser) replaces(raw *yaml.Node, own string) []string {
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
	if n.Kind != yaml.SequenceNode {
		p.errorf(n.Line, "config error, replaces must be a list of {name: …}, found %s", describe(n))
		return nil
	}
	var names []string
	for _, raw := range n.Content {
		item, ok := p.enter(raw)
		if !ok {
			return names
		}
		if item.Kind != yaml.MappingNode {
			p.errorf(item.Line, "config error, yaml file contains list of type other than map: %s", describe(item))
			p.leave()
			continue
		}
		name := p.str(p.fields(item, "a replaces entry", replacesKeys)["name"], "name")
		switch {
		case name == "":
			p.errorf(item.Line, "should not have an empty replaces entry")
		case name == own:
			p.errorf(item.Line, "replaces should not contain name of same descriptor")
		default:
			names = append(names, name)
			p.refs = append(p.refs, nameRef{name, p.file, item.Line})
		}
		p.leave()
	}
	return names
}

func lineOf(n, parent *yaml.Node) int {
	if n != nil {
		return n.Line
	}
	return parent.Line
}
