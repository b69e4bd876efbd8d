package rules

import (
	"fmt"
	"slices"
	"strings"
)

// Override is a limit the request itself carries for one descriptor
// (envoy.extensions.common.ratelimit.v3.RateLimitDescriptor.limit).
type Override struct {
	RequestsPerUnit uint32
	Unit            Unit
}

// Descriptor is one descriptor of a RateLimitRequest.
type Descriptor struct {
	Entries []Entry
	// Override, when not nil, replaces whatever rule would match.
	Override *Override
}

// Resolve returns the limit for each descriptor of one request to the domain
// of c, index for index; an element is nil when no limit applies.
//
// A descriptor with an Override gets a Limit with the override's
// RequestsPerUnit and Unit whether or not a rule matches, as envoyproxy/ratelimit
// does: Override is true, FullKey is the domain followed by "." and the
// entries as key_value (key alone for an empty value) joined by ".", Counter is
// the entries unchanged (the same counter the rule would use, windowed by the
// override's unit), and it has no name, replaces, shadow or quota mode. An
// override whose Unit is not Valid is an error. Other descriptors get Match.
//
// Then replaces apply across the request: every name listed in Replaces of any
// resolved limit (whether itself replaced or unlimited) marks the limits with
// that Name, and those are dropped (set to nil). Unlimited limits are never
// dropped, so they still answer OK with no counter, as in
// envoyproxy/ratelimit. Resolve on a nil Config (an unknown domain) returns
// all nils and no error, overrides included; so does a descriptor without
// entries.
func Resolve(c *Config, descriptors []Descriptor) ([]*Limit, error) {
	limits := make([]*Limit, len(descriptors))
	if c == nil {
		return limits, nil
	}
	var replaced map[string]bool
	for i, d := range descriptors {
		if len(d.Entries) == 0 {
			continue
		}
		if o := d.Override; o != nil {
			if !o.Unit.Valid() {
				return nil, fmt.Errorf("descriptor %d: limit override unit %v is not a valid unit", i, o.Unit)
			}
			limits[i] = &Limit{
				RequestsPerUnit: o.RequestsPerUnit,
				Unit:            o.Unit,
				Override:        true,
				FullKey:         descriptorKey(c.Domain, d.Entries),
				Counter:         slices.Clone(d.Entries),
			}
			continue
		}
		limits[i] = c.Match(d.Entries)
		if l := limits[i]; l != nil && len(l.Replaces) > 0 {
			if replaced == nil {
				replaced = map[string]bool{}
			}
			for _, name := range l.Replaces {
				replaced[name] = true
			}
		}
	}
	for i, l := range limits {
		if l != nil && !l.Unlimited && l.Name != "" && replaced[l.Name] {
			limits[i] = nil
		}
	}
	return limits, nil
}

func descriptorKey(domain string, entries []Entry) string {
	var b strings.Builder
	b.WriteString(domain)
	for _, e := range entries {
		b.WriteByte('.')
		writeKeyValue(&b, e)
	}
	return b.String()
}

// OverLimit combines per-descriptor outcomes into the request's answer, the
// way envoyproxy/ratelimit does since quota_mode was added. limits is what
// Resolve returned and over[i] reports whether descriptor i's counter is past
// its limit after this request's hits; the slices have equal length.
//
// A nil or Unlimited limit takes no part. A ShadowMode limit is never over
// (its descriptor answers OK) but, if it is also in QuotaMode, it still counts
// as a quota descriptor. The request is over the limit when any descriptor not
// in QuotaMode is over, or when there is at least one quota descriptor and
// every quota descriptor is over: quota descriptors only refuse a request
// together, so a client can fall back to whichever quota still has room.
func OverLimit(limits []*Limit, over []bool) bool {
	quotas, quotasOver := 0, 0
	for i, l := range limits {
		if l == nil || l.Unlimited {
			continue
		}
		o := i < len(over) && over[i] && !l.ShadowMode
		if l.QuotaMode {
			quotas++
			if o {
				quotasOver++
			}
		} else if o {
			return true
		}
	}
	return quotas > 0 && quotasOver == quotas
}
