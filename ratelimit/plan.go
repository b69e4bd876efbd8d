package ratelimit

import (
	"math"
	"strings"
	"time"

	ratelimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/leakytokens/leaky/internal/contract"
	"github.com/leakytokens/leaky/internal/policy"
	"github.com/leakytokens/leaky/ratelimit/store"
)

// plan is what one descriptor of a request becomes.
type plan struct {
	item    store.Item
	hasItem bool   // false: no rule, or unlimited: OK without touching the store
	noRule  bool   // no rule matched the descriptor
	scope   string // user, org, provider, or the descriptor's key path
	metric  string // the descriptor's keys joined by "." (never values)
	status  *rlsv3.RateLimitResponse_RateLimit
	quota   bool // envoyproxy/ratelimit quota_mode: refuses only with every other quota
	// zero marks a limit of 0 requests per unit: any hit is refused
	// without a store call.
	zero      bool
	unlimited bool // an unlimited rule: OK, remaining MaxUint32, no counter
	// metadata is the matched rule's metadata (envoyproxy/ratelimit
	// domains), for the response's dynamic_metadata; nil for none.
	metadata *structpb.Struct
	// allowance is the descriptor's quota (leaky-tokens user and org
	// descriptors), decided with the buckets; nil for none.
	allowance *quotaPlan
	// window is the bucket's span in seconds for the RateLimit-Policy
	// header: the full-drain time of a GCRA bucket, the window length
	// otherwise.
	window int64
}

// hits returns the hits of descriptor d: its own hits_addend when set (0
// checks only), else the request's, at least 1 (envoyproxy/ratelimit's rule).
func hits(req *rlsv3.RateLimitRequest, d *ratelimitv3.RateLimitDescriptor) int64 {
	if h := d.GetHitsAddend(); h != nil {
		return clampInt64(h.GetValue())
	}
	return clampInt64(max(1, uint64(req.GetHitsAddend())))
}

func clampInt64(v uint64) int64 {
	if v > math.MaxInt64 {
		return math.MaxInt64
	}
	return int64(v)
}

func metricKey(d *ratelimitv3.RateLimitDescriptor) string {
	var b strings.Builder
	for i, e := range d.GetEntries() {
		if i > 0 {
			b.WriteByte('.')
		}
		b.WriteString(e.GetKey())
	}
	return b.String()
}

// planLeaky maps a descriptor of domain leaky-tokens to its bucket and its
// quota at now: the contract's parser names them (any other shape has no
// rule), and planBucket and planQuota size them by the policy.
func planLeaky(p *policy.Policy, req *rlsv3.RateLimitRequest, d *ratelimitv3.RateLimitDescriptor, now time.Time) plan {
	var parser contract.Parser
	for _, e := range d.GetEntries() {
		parser.Add(e.GetKey(), e.GetValue())
	}
	desc, ok := parser.Descriptor()
	if !ok {
		return plan{metric: metricKey(d), noRule: true}
	}
	pl := planDescriptor(p, desc, hits(req, d), now)
	pl.metric = metricKey(d)
	return pl
}

// planDescriptor plans desc's bucket and quota, charged hits at now. A
// descriptor with a quota and no bucket is planned on the quota alone.
func planDescriptor(p *policy.Policy, desc contract.Descriptor, hits int64, now time.Time) plan {
	pl := planBucket(p, desc, hits)
	if pl.allowance = planQuota(p, desc, hits, now); pl.allowance != nil && pl.noRule {
		pl.noRule, pl.scope = false, string(desc.Scope)
	}
	return pl
}

// planBucket plans a charge of hits on the bucket desc names, sized by
// policy p: a user's by their tier's entry for the provider (an unknown tier
// uses the default tier), an organisation's or a provider's by its pool. A
// bucket the policy does not define has no rule.
func planBucket(p *policy.Policy, desc contract.Descriptor, hits int64) plan {
	var (
		b  policy.Bucket
		ok bool
	)
	switch desc.Scope {
	case contract.ScopeUser:
		tier := desc.Tier
		if _, known := p.Tiers[tier]; !known {
			tier = p.DefaultTier
		}
		b, ok = p.UserBucket(tier, desc.Provider)
	case contract.ScopeOrg:
		b, ok = p.OrgBucket(desc.Provider)
	case contract.ScopeProvider:
		b, ok = p.ProviderBucket(desc.Provider)
	}
	if !ok {
		return plan{noRule: true}
	}
	// Built and validated when the policy was loaded: a bucket of the policy
	// always has a limit, so it can never turn into "no rule".
	lim := b.Limit()
	pl := plan{hasItem: true, scope: string(desc.Scope)}
	pl.item = store.Item{Key: desc.Key(), Algorithm: store.GCRA, Limit: lim.Burst, Period: lim.Interval, Hits: hits}
	pl.window = ceilDiv(lim.Tolerance(), 1e6)
	pl.status = &rlsv3.RateLimitResponse_RateLimit{
		Name:            pl.scope,
		RequestsPerUnit: clampUint32(lim.Burst),
		Unit:            unitFor(pl.window),
	}
	return pl
}

// unitFor is the smallest unit at least as long as a bucket's drain time,
// which is what Envoy's x-ratelimit headers read as the window.
func unitFor(seconds int64) rlsv3.RateLimitResponse_RateLimit_Unit {
	switch {
	case seconds <= 1:
		return rlsv3.RateLimitResponse_RateLimit_SECOND
	case seconds <= 60:
		return rlsv3.RateLimitResponse_RateLimit_MINUTE
	case seconds <= 3600:
		return rlsv3.RateLimitResponse_RateLimit_HOUR
	default:
		return rlsv3.RateLimitResponse_RateLimit_DAY
	}
}

func clampUint32(v int64) uint32 {
	switch {
	case v < 0:
		return 0
	case v > math.MaxUint32:
		return math.MaxUint32
	}
	return uint32(v)
}

func ceilDiv(a, b int64) int64 {
	if a <= 0 {
		return 0
	}
	return (a + b - 1) / b
}
