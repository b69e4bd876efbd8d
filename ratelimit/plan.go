package ratelimit

import (
	"crypto/sha256"
	"encoding/base64"
	"math"
	"strings"

	ratelimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"

	"github.com/leakytokens/leaky/internal/policy"
	"github.com/leakytokens/leaky/ratelimit/gcra"
	"github.com/leakytokens/leaky/ratelimit/store"
)

// Scopes of the leaky-tokens buckets, as the OVER_LIMIT body names them.
const (
	scopeUser     = "user"
	scopeOrg      = "org"
	scopeProvider = "provider"
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

// keyPart makes a descriptor value safe to embed in a store key: short plain
// values stay readable, anything long or containing the separator is replaced
// by a hash of itself.
func keyPart(v string) string {
	if len(v) <= 64 && !strings.ContainsAny(v, ":#=") {
		return v
	}
	sum := sha256.Sum256([]byte(v))
	return "#" + base64.RawURLEncoding.EncodeToString(sum[:16])
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

// planLeaky maps a descriptor of domain leaky-tokens to its bucket:
// (provider,P)(tier,T)(user,U) is U's bucket sized by tier T;
// (provider,P)(org,O) is organisation O's pool; (provider,P) alone is the
// provider pool. Entries may come in any order. An unknown tier falls back to
// the default tier. Any other shape has no rule.
func planLeaky(p *policy.Policy, req *rlsv3.RateLimitRequest, d *ratelimitv3.RateLimitDescriptor) plan {
	pl := plan{metric: metricKey(d)}
	var provider, tier, user, org string
	var nProvider, nTier, nUser, nOrg int
	for _, e := range d.GetEntries() {
		switch e.GetKey() {
		case "provider":
			provider, nProvider = e.GetValue(), nProvider+1
		case "tier":
			tier, nTier = e.GetValue(), nTier+1
		case "user":
			user, nUser = e.GetValue(), nUser+1
		case "org":
			org, nOrg = e.GetValue(), nOrg+1
		default:
			pl.noRule = true
			return pl
		}
	}
	var (
		b   policy.Bucket
		ok  bool
		key string
	)
	switch {
	case nProvider != 1 || provider == "":
		pl.noRule = true
		return pl
	case nTier == 1 && nUser == 1 && nOrg == 0 && user != "":
		if _, known := p.Tiers[tier]; !known {
			tier = p.DefaultTier
		}
		b, ok = p.UserBucket(tier, provider)
		pl.scope, key = scopeUser, "u:"+keyPart(provider)+":"+keyPart(user)
	case nOrg == 1 && nTier == 0 && nUser == 0 && org != "":
		b, ok = p.OrgBucket(provider)
		pl.scope, key = scopeOrg, "o:"+keyPart(provider)+":"+keyPart(org)
	case nTier == 0 && nUser == 0 && nOrg == 0:
		b, ok = p.ProviderBucket(provider)
		pl.scope, key = scopeProvider, "p:"+keyPart(provider)
	}
	if !ok {
		pl.noRule = true
		return pl
	}
	lim, err := gcra.NewLimit(b.Capacity, b.LeakRate)
	if err != nil { // the policy was validated; unreachable short of a bug
		pl.noRule = true
		return pl
	}
	pl.hasItem = true
	pl.item = store.Item{Key: key, Algorithm: store.GCRA, Limit: lim.Burst, Period: lim.Interval, Hits: hits(req, d)}
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
