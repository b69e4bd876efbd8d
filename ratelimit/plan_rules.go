package ratelimit

import (
	"strings"

	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"

	"github.com/leakytokens/leaky/internal/contract"
	"github.com/leakytokens/leaky/ratelimit/rules"
	"github.com/leakytokens/leaky/ratelimit/store"
)

// planRules maps the descriptors of a request to an envoyproxy/ratelimit
// domain's fixed windows: rules.Resolve picks each descriptor's limit (the
// request's own override first, replaces applied across the request);
// unlimited and unmatched descriptors answer OK without a counter.
func planRules(c *rules.Config, req *rlsv3.RateLimitRequest, plans []plan) {
	descs := make([]rules.Descriptor, len(req.GetDescriptors()))
	for i, d := range req.GetDescriptors() {
		entries := make([]rules.Entry, len(d.GetEntries()))
		for j, e := range d.GetEntries() {
			entries[j] = rules.Entry{Key: e.GetKey(), Value: e.GetValue()}
		}
		descs[i].Entries = entries
		// An override with an invalid unit is ignored: the configured rule
		// applies to that descriptor.
		if o := d.GetLimit(); o != nil && rules.Unit(o.GetUnit()).Valid() {
			descs[i].Override = &rules.Override{RequestsPerUnit: o.GetRequestsPerUnit(), Unit: rules.Unit(o.GetUnit())}
		}
	}
	limits, err := rules.Resolve(c, descs)
	if err != nil { // unreachable: overrides were validated above
		for i := range plans {
			plans[i].noRule = true
		}
		return
	}
	for i, l := range limits {
		d := req.GetDescriptors()[i]
		pl := &plans[i]
		pl.metric = metricKey(d)
		switch {
		case l == nil:
			pl.noRule = true
			continue
		case l.Unlimited:
			// No status: envoyproxy/ratelimit answers an unlimited
			// descriptor without current_limit.
			pl.unlimited = true
			continue
		}
		pl.metadata = l.Metadata
		// The metric label is the descriptor's keys: never request values
		// (an override's or value_to_metric's FullKey carries them), so the
		// series count cannot grow with users.
		pl.scope = pl.metric
		pl.quota = l.QuotaMode
		pl.window = l.Unit.Seconds()
		pl.status = &rlsv3.RateLimitResponse_RateLimit{
			Name:            l.Name,
			RequestsPerUnit: l.RequestsPerUnit,
			Unit:            rlsv3.RateLimitResponse_RateLimit_Unit(l.Unit),
		}
		h := hits(req, d)
		if l.RequestsPerUnit == 0 {
			pl.zero = h > 0 && !l.ShadowMode
			continue
		}
		pl.hasItem = true
		pl.item = store.Item{
			Key:       counterKey(c.Domain, l.Counter),
			Algorithm: store.FixedWindow,
			Limit:     int64(l.RequestsPerUnit),
			Period:    l.Unit.Seconds() * 1e6,
			Hits:      h,
			Shadow:    l.ShadowMode || l.QuotaMode,
		}
	}
}

// counterKey is a fixed-window counter's store key: the domain and the
// counter's entries, each part hashed when long (the store adds the window).
func counterKey(domain string, counter []rules.Entry) string {
	var b strings.Builder
	b.WriteString("w:")
	b.WriteString(contract.KeyPart(domain))
	for _, e := range counter {
		b.WriteByte(':')
		b.WriteString(contract.KeyPart(e.Key))
		b.WriteByte('=')
		b.WriteString(contract.KeyPart(e.Value))
	}
	key := b.String()
	if len(key) > 200 {
		return "w:" + contract.KeyPart(key)
	}
	return key
}
