package loadgen

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync/atomic"

	ratelimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"google.golang.org/grpc"

	"github.com/leakytokens/leaky/internal/contract"
)

// RateLimitOptions shape the ShouldRateLimit requests of a RateLimit
// target. The zero value is usable: DefaultRateLimitOptions' values fill
// every zero field.
type RateLimitOptions struct {
	Domain   string // rate-limit domain; default contract.Domain
	Provider string // value of the provider entry; default "openai"
	Tier     string // value of the tier entry; default "free"
	// Keys is the number of distinct users (and, with 3 descriptors,
	// organisations); request i is user KeyPrefix+(i mod Keys). Default
	// 10000.
	Keys      int
	KeyPrefix string // default "lg-"
	// Descriptors is 1, the user's bucket (provider,P)(tier,T)(user,U), or
	// 3, which adds the organisation's (provider,P)(org,O) and the
	// provider's (provider,P), as Envoy sends them for an organisation
	// member (DESIGN §3). Default 1.
	Descriptors int
	Hits        uint32 // hits_addend of every request; default 1
}

// DefaultRateLimitOptions returns the defaults of a throughput benchmark:
// 10k users of the free tier on openai, one descriptor, one token each, so
// that nearly every request fits its user's bucket.
func DefaultRateLimitOptions() RateLimitOptions {
	return RateLimitOptions{
		Domain:      contract.Domain,
		Provider:    "openai",
		Tier:        "free",
		Keys:        10000,
		KeyPrefix:   "lg-",
		Descriptors: 1,
		Hits:        1,
	}
}

func (o RateLimitOptions) withDefaults() RateLimitOptions {
	d := DefaultRateLimitOptions()
	if o.Domain == "" {
		o.Domain = d.Domain
	}
	if o.Provider == "" {
		o.Provider = d.Provider
	}
	if o.Tier == "" {
		o.Tier = d.Tier
	}
	if o.Keys == 0 {
		o.Keys = d.Keys
	}
	if o.KeyPrefix == "" {
		o.KeyPrefix = d.KeyPrefix
	}
	if o.Descriptors == 0 {
		o.Descriptors = d.Descriptors
	}
	if o.Hits == 0 {
		o.Hits = d.Hits
	}
	return o
}

// Validate reports every problem with o after defaults are applied.
func (o RateLimitOptions) Validate() error {
	o = o.withDefaults()
	var errs []error
	if o.Keys < 1 {
		errs = append(errs, errors.New("keys: must be at least 1"))
	}
	if o.Descriptors != 1 && o.Descriptors != 3 {
		errs = append(errs, fmt.Errorf("descriptors %d: must be 1 or 3", o.Descriptors))
	}
	return errors.Join(errs...)
}

// Requests returns the Keys distinct requests o describes, request k for
// user KeyPrefix+k.
func (o RateLimitOptions) Requests() ([]*rlsv3.RateLimitRequest, error) {
	if err := o.Validate(); err != nil {
		return nil, err
	}
	o = o.withDefaults()
	reqs := make([]*rlsv3.RateLimitRequest, o.Keys)
	for k := range reqs {
		id := o.KeyPrefix + strconv.Itoa(k)
		r := contract.Request{Provider: o.Provider, Tier: o.Tier, User: id}
		if o.Descriptors == 3 {
			r.Org = id
		}
		entries := r.Descriptors()[:o.Descriptors] // user first, then org and provider
		ds := make([]*ratelimitv3.RateLimitDescriptor, len(entries))
		for i, es := range entries {
			ds[i] = descriptor(es)
		}
		reqs[k] = &rlsv3.RateLimitRequest{Domain: o.Domain, Descriptors: ds, HitsAddend: o.Hits}
	}
	return reqs, nil
}

// descriptor builds a descriptor from plain entries.
func descriptor(entries []contract.Entry) *ratelimitv3.RateLimitDescriptor {
	d := &ratelimitv3.RateLimitDescriptor{Entries: make([]*ratelimitv3.RateLimitDescriptor_Entry, len(entries))}
	for i, e := range entries {
		d.Entries[i] = &ratelimitv3.RateLimitDescriptor_Entry{Key: e.Key, Value: e.Value}
	}
	return d
}

// RateLimit sends ShouldRateLimit requests and counts the answers by
// overall code. It is safe for concurrent use.
type RateLimit struct {
	client  rlsv3.RateLimitServiceClient
	reqs    []*rlsv3.RateLimitRequest
	answers [3]atomic.Int64 // by RateLimitResponse_Code: UNKNOWN, OK, OVER_LIMIT
}

// NewRateLimit returns a target that sends o's requests over conn. The
// requests are built once, so sending allocates only what gRPC does.
func NewRateLimit(conn grpc.ClientConnInterface, o RateLimitOptions) (*RateLimit, error) {
	reqs, err := o.Requests()
	if err != nil {
		return nil, err
	}
	return &RateLimit{client: rlsv3.NewRateLimitServiceClient(conn), reqs: reqs}, nil
}

// Do sends request i (the request of user i mod Keys) and returns the gRPC
// error, if any. An answer, OK or OVER_LIMIT, is not an error.
func (r *RateLimit) Do(ctx context.Context, i int) error {
	resp, err := r.client.ShouldRateLimit(ctx, r.reqs[i%len(r.reqs)])
	if err != nil {
		return err
	}
	c := int(resp.GetOverallCode())
	if c < 0 || c >= len(r.answers) {
		c = int(rlsv3.RateLimitResponse_UNKNOWN)
	}
	r.answers[c].Add(1)
	return nil
}

// Answers returns the answers so far by overall code name (OK, OVER_LIMIT,
// UNKNOWN), omitting codes never seen.
func (r *RateLimit) Answers() map[string]int64 {
	m := make(map[string]int64)
	for c := range r.answers {
		if n := r.answers[c].Load(); n > 0 {
			m[rlsv3.RateLimitResponse_Code(c).String()] = n
		}
	}
	return m
}
