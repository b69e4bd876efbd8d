package rules

import (
	"slices"
	"strings"

	"google.golang.org/protobuf/types/known/structpb"
)

// Entry is one (key, value) pair of a request descriptor, as Envoy sends it in
// RateLimitDescriptor.entries. Keys and values are case-sensitive.
type Entry struct {
	Key   string
	Value string
}

// Limit is the limit that applies to one request descriptor. Match and
// Resolve return a new Limit per call, owned by the caller.
type Limit struct {
	// RequestsPerUnit is the number of hits allowed per window; 0 refuses
	// every hit. Meaningless when Unlimited.
	RequestsPerUnit uint32
	// Unit sets the fixed window (see Unit.Window). Unknown when Unlimited.
	Unit Unit
	// Unlimited limits are answered OK without touching a counter
	// (envoyproxy/ratelimit reports LimitRemaining = MaxUint32 for them).
	Unlimited bool
	// Name is rate_limit.name, the handle other limits' Replaces refer to;
	// empty when unnamed.
	Name string
	// Replaces lists the names of the limits this one supersedes when both
	// apply to one request (see Resolve).
	Replaces []string
	// ShadowMode: the counter is charged and over-limit is reported in
	// statistics, but the descriptor's answer is always OK.
	ShadowMode bool
	// QuotaMode: the limit is a soft quota; see OverLimit for how quota
	// descriptors combine into the request's answer.
	QuotaMode bool
	// ShareThreshold is true when at least one entry matched a wildcard rule
	// with share_threshold: true, so Counter carries the wildcard pattern in
	// place of that entry's value.
	ShareThreshold bool
	// DetailedMetric is the detailed_metric flag of the rule that holds the
	// limit; it already shaped FullKey.
	DetailedMetric bool
	// Metadata is the metadata of the rule that holds the limit (nil when
	// it has none, and for an Override): envoyproxy/ratelimit returns it
	// to Envoy in the response's dynamic_metadata. It is shared by every
	// Limit of that rule and must not be modified.
	Metadata *structpb.Struct
	// Override is true when the limit is the request's own
	// RateLimitDescriptor.limit rather than a configured rule.
	Override bool
	// FullKey names the limit in statistics, e.g.
	// "messaging.message_type_marketing.to_number": the domain, then one
	// element per entry joined with ".". See the package documentation for
	// how wildcards, value_to_metric, detailed_metric and share_threshold
	// shape each element.
	FullKey string
	// Counter identifies the counter this limit charges, one element per
	// request entry in order: the request's entries, except that a value
	// matched by a share_threshold wildcard is replaced by the wildcard
	// pattern (e.g. "files/*"), so every matching value shares one counter.
	// envoyproxy/ratelimit's Redis key is
	// prefix + domain + "_" + for each element key + "_" + value + "_" +
	// the window start in Unix seconds; the counter does not depend on Unit
	// or RequestsPerUnit.
	Counter []Entry
}

// Config is the rule tree of one domain, built by Parse. A Config is
// immutable after Parse and safe for concurrent use. A nil *Config stands for
// an unknown domain: it matches nothing.
type Config struct {
	// Domain is the file's domain, the value Envoy sends in
	// RateLimitRequest.domain.
	Domain string
	// File is the name the Config was parsed under, for messages; with
	// domains merged (Options.MergeDomains), the first of its files in name
	// order.
	File string
	// Name is the file's optional root name, which Envoy Gateway writes
	// (equal to the domain); it only labels the file.
	Name string

	root  level
	names map[string]bool // rate_limit names, for replaces
}

// level holds the sibling rules of one descriptors list.
type level struct {
	exact     map[Entry]*rule  // rules with a non-empty value (wildcards too)
	wildcards []*rule          // rules whose value holds a '*', in load order
	defaults  map[string]*rule // rules without a value, by key
	order     []*rule          // every rule of the level, in load order
}

type rule struct {
	key, value string
	parts      []string // value split at every '*'; wildcard rules only
	wildcard   bool
	line       int
	file       string // the file the rule is in, for messages

	limit         *ruleLimit // nil without a rate_limit block
	shadow        bool
	quota         bool
	detailed      bool
	valueToMetric bool
	share         bool
	metadata      *structpb.Struct // nil when the rule has none

	children level
}

type ruleLimit struct {
	requestsPerUnit uint32
	unit            Unit
	unlimited       bool
	name            string
	replaces        []string
}

type matchKind uint8

const (
	byValue    matchKind = iota + 1 // key and value equal
	byWildcard                      // key equal, value matches the rule's pattern
	byDefault                       // key equal, rule has no value
)

type step struct {
	r   *rule
	how matchKind
}

func (l *level) empty() bool {
	return len(l.exact) == 0 && len(l.defaults) == 0
}

// find picks the rule for e among l's rules: key and value equal first, then
// the first wildcard rule in load order whose pattern matches the value,
// then the rule for the key without a value.
func (l *level) find(e Entry) (*rule, matchKind) {
	if e.Value != "" {
		if r := l.exact[e]; r != nil {
			return r, byValue
		}
	}
	for _, r := range l.wildcards {
		if r.key == e.Key && glob(r.parts, e.Value) {
			return r, byWildcard
		}
	}
	if r := l.defaults[e.Key]; r != nil {
		return r, byDefault
	}
	return nil, 0
}

// Match returns the configured limit for one request descriptor, or nil when
// no rule applies. It walks the rule tree one entry per level, choosing at
// each level the rule for the entry by exact key and value, else the first
// wildcard rule (a value holding '*', load order) whose pattern matches the
// entry's value, else the rule with the entry's key and no value. The walk never
// backtracks: if the chosen rule lacks the nested rules the next entry needs,
// there is no match. A limit applies only when the request has exactly as many
// entries as the depth of the rule that holds it; a rule without rate_limit
// (a placeholder or an allow-list entry) yields nil. Match ignores
// Replaces and any request override; Resolve applies both. Match on a nil
// Config, or with no entries, returns nil.
func (c *Config) Match(entries []Entry) *Limit {
	if c == nil || len(entries) == 0 {
		return nil
	}
	path := make([]step, 0, len(entries))
	lvl := &c.root
	for i, e := range entries {
		r, how := lvl.find(e)
		if r == nil {
			return nil
		}
		path = append(path, step{r, how})
		if i == len(entries)-1 {
			break
		}
		if r.children.empty() {
			return nil
		}
		lvl = &r.children
	}
	leaf := path[len(path)-1].r
	if leaf.limit == nil {
		return nil
	}
	return c.limitFor(entries, path)
}

func (c *Config) limitFor(entries []Entry, path []step) *Limit {
	leaf := path[len(path)-1].r
	rl := leaf.limit
	l := &Limit{
		RequestsPerUnit: rl.requestsPerUnit,
		Unit:            rl.unit,
		Unlimited:       rl.unlimited,
		Name:            rl.name,
		Replaces:        slices.Clone(rl.replaces),
		ShadowMode:      leaf.shadow,
		QuotaMode:       leaf.quota,
		DetailedMetric:  leaf.detailed,
		Metadata:        leaf.metadata,
		Counter:         make([]Entry, len(entries)),
	}
	for i, e := range entries {
		l.Counter[i] = e
		if shared(path[i]) {
			l.Counter[i].Value = path[i].r.value
			l.ShareThreshold = true
		}
	}
	l.FullKey = fullKey(c.Domain, entries, path, leaf.detailed, l.ShareThreshold)
	return l
}

// glob reports whether s matches the pattern split at its '*'s into parts:
// s starts with the first part, ends with the last, and holds the others in
// order between them, not overlapping. Each '*' stands for any run of bytes,
// empty included; a pattern without '*' (one part) matches itself only.
func glob(parts []string, s string) bool {
	if len(parts) == 1 {
		return s == parts[0]
	}
	first, last := parts[0], parts[len(parts)-1]
	if len(s) < len(first)+len(last) || !strings.HasPrefix(s, first) || !strings.HasSuffix(s, last) {
		return false
	}
	mid := s[len(first) : len(s)-len(last)]
	for _, p := range parts[1 : len(parts)-1] {
		i := strings.Index(mid, p)
		if i < 0 {
			return false
		}
		mid = mid[i+len(p):]
	}
	return true
}

func shared(s step) bool { return s.how == byWildcard && s.r.share }

// fullKey builds the statistics name as envoyproxy/ratelimit's GetLimit does.
func fullKey(domain string, entries []Entry, path []step, detailed, anyShared bool) string {
	var b strings.Builder
	b.WriteString(domain)
	for i, e := range entries {
		b.WriteByte('.')
		s := path[i]
		switch {
		case detailed && !anyShared:
			// Every element is key_value, even for an empty value.
			b.WriteString(e.Key)
			b.WriteByte('_')
			b.WriteString(e.Value)
		case shared(s):
			writePattern(&b, e.Key, s.r.value)
		case detailed:
			writeKeyValue(&b, e)
		case s.how == byValue:
			writeKeyValue(&b, e)
		case s.r.valueToMetric:
			writeKeyValue(&b, e)
		case s.how == byWildcard:
			writePattern(&b, e.Key, s.r.value)
		default:
			b.WriteString(e.Key)
		}
	}
	return b.String()
}

func writePattern(b *strings.Builder, key, pattern string) {
	b.WriteString(key)
	b.WriteByte('_')
	b.WriteString(pattern)
}

func writeKeyValue(b *strings.Builder, e Entry) {
	b.WriteString(e.Key)
	if e.Value != "" {
		b.WriteByte('_')
		b.WriteString(e.Value)
	}
}
