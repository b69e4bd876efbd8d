// Package rules reads envoyproxy/ratelimit's YAML descriptor configuration and
// answers which limit applies to a request descriptor, with that project's
// matching rules, statistics names and validation, so that a deployment can
// point Envoy at Leaky Tokens without rewriting its rule files.
//
// # Files
//
// One file holds one domain:
//
//	name: messaging              # optional, only labels the file (Envoy Gateway writes it)
//	domain: messaging            # required, unique across files unless merged
//	descriptors:
//	  - key: message_type        # required
//	    value: marketing         # optional; a '*' anywhere is a wildcard: "/api/*/v1"
//	    descriptors:             # optional nested rules, one level per entry
//	      - key: to_number
//	        rate_limit:          # optional; without it the rule limits nothing
//	          unit: day          # second|minute|hour|day|week|month|year, any case
//	          requests_per_unit: 5
//	          name: marketing    # optional handle for replaces
//	          replaces:          # optional: names of limits this one supersedes
//	            - name: other
//	          # unlimited: true  # instead of unit and requests_per_unit
//	        shadow_mode: false   # count, report, but always answer OK
//	        quota_mode: false    # soft quota, see OverLimit
//	        detailed_metric: false
//	        value_to_metric: false
//	        share_threshold: false # wildcard values share one counter
//	        metadata:            # optional, any mapping; see Limit.Metadata
//	          service: sms
//
// Parse rejects, naming the file and line: YAML syntax errors; more than one
// YAML document; a key that is not a string ("key is not of type string");
// a key not allowed at its level ("unknown key", the misspelled-key check,
// applied per level: a descriptor, a rate_limit block and a replaces entry
// each take only their own keys); a key repeated in one mapping; a list
// element that is not a mapping; a missing or empty domain; a descriptor
// without key; two descriptors with the same key and value in one list
// ("duplicate descriptor composite key"); a unit that is not one of the seven;
// requests_per_unit missing, negative, fractional or above 2^32−1 on a limited
// rule (an explicit 0 is allowed and refuses everything); unit or
// requests_per_unit together with unlimited; a replaces entry without a name,
// naming its own limit, or naming no rate_limit of the file; share_threshold on
// a value without '*'; metadata that is not a mapping, or holds a
// non-scalar or repeated key; a value of the wrong YAML type (booleans
// also accept YAML 1.1 yes/no/on/off, as the Go YAML library envoyproxy/ratelimit
// uses does). Explicit nulls and empty lists (rate_limit: null, replaces: [],
// descriptors: [], value: "") mean absent, as in Envoy Gateway's renderings.
// NewSet adds: the same domain in two files, unless NewSetWith merges them
// (Options.MergeDomains, envoyproxy/ratelimit's MERGE_DOMAIN_CONFIG: the
// later files' top-level descriptors, in file-name order, join the first's,
// and a key and value already present is a duplicate descriptor composite
// key reported against the later file); replaces names are then checked
// across every file of the domain. Anchors, aliases and
// merge keys (<<) are followed, within a budget of 2^20 YAML nodes visited
// (aliases counted each time they are followed) and 200 levels of nesting.
//
// Stricter than envoyproxy/ratelimit, deliberately, which accepts any known
// key at any level and ignores misplaced ones, defaults a missing
// requests_per_unit to 0 (refuse all), accepts an unlimited limit with
// requests_per_unit or an unrecognised unit, and does not check that
// replaced names exist. It also loads a domain's files in an unspecified
// order (so which file a duplicate is reported against, and the order of
// wildcards across merged files, can vary); here it is file-name order. Keys it
// does not know (for example newer additions such as unit_multiplier) are
// rejected rather than ignored, so no limit silently changes meaning.
//
// # Matching
//
// A request descriptor is a list of entries (key, value). Match walks the rule
// tree one entry per level. At each level it takes the rule with the entry's
// key and value; else the first wildcard rule in load order (file order;
// with merged domains, file-name order first) with the entry's key whose
// value pattern matches the entry's value; else the rule with the entry's key
// and no value (the default for that key). This is the order
// envoyproxy/ratelimit's code implements (exact, wildcards, default; not
// exact, default, wildcards as it is sometimes described); among wildcards
// the first listed wins, not the most specific ("/api/*" listed before "/api/admin*" shadows it). It never
// backtracks to a less specific rule. A limit applies only when the request
// has exactly as many entries as the depth of the rule holding it.
//
// A value holding '*' is a pattern: each '*' stands for any run of bytes,
// empty included, anywhere in the value ("/api/*/v1" matches "/api//v1" and
// "/api/a/b/v1"; "foo*bar*baz" matches "foobarbaz"; "a*a" does not match
// "a"; "**" is "*"; "*" alone matches every value, the empty one too).
// There is no escape for a literal '*', but a request value spelling the
// pattern matches it exactly. Keys and values are compared separately, and
// only the value is a pattern; envoyproxy/ratelimit globs key+"_"+value, so
// there (a_b, c) and (a, b_c) collide, a pattern "*x" of key a also matches
// key a_b, and a value-less rule whose key holds '*' is a wildcard over
// key_value; here none of these happen, and '*' in a key is literal.
//
// # Statistics key (Limit.FullKey)
//
// FullKey is the domain followed, for each entry, by "." and:
//   - key_value when the entry matched a rule with that value;
//   - key when it matched a rule without value, or key_value if that rule has
//     value_to_metric (key alone if the value is empty);
//   - key_pattern (e.g. key_foo*) when it matched a wildcard, or key_value if
//     that rule has value_to_metric;
//   - key_pattern whenever the wildcard rule has share_threshold, which wins
//     over value_to_metric.
//
// When the rule holding the limit has detailed_metric, value_to_metric is
// ignored and every element is key_value — literally key + "_" + value, so an
// empty value leaves a trailing "_" — except elements matched by a
// share_threshold wildcard, which stay key_pattern, and, when any element is,
// the others are key_value or key for an empty value. Examples:
// "messaging.message_type_marketing.to_number",
// "domain.route_api.http_method_GET.subject_id" (value_to_metric on route and
// http_method).
//
// # Counters and windows
//
// Limit.Counter identifies the counter: the request's entries, with each value
// matched by a share_threshold wildcard (any pattern, "/api/*/v1" too)
// replaced by its pattern, so every matching value charges one counter; a
// value matching the rule exactly keeps its own. The window is
// fixed and aligned to the Unix epoch (Unit.Window); a month is 30 days and a
// year 365 days, as in envoyproxy/ratelimit.
//
// # A request
//
// Resolve applies a request's per-descriptor limit overrides and the rules'
// replaces across all descriptors of one request; OverLimit combines
// per-descriptor outcomes, honouring shadow_mode and quota_mode. The package
// does no I/O except LoadFS and keeps no state beyond the immutable Config
// and Set values.
package rules
