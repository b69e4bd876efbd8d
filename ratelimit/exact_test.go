package ratelimit

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	ratelimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"

	"github.com/leakytokens/leaky/internal/testenv"
)

// hammer sends requests of 1 token on one user's bucket from 64 goroutines
// spread over the given servers until each has sent perCaller, and returns
// how many were admitted.
func hammer(t *testing.T, servers []*server, perCaller int) int64 {
	t.Helper()
	var admitted atomic.Int64
	var wg sync.WaitGroup
	for c := 0; c < 64; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := servers[c%len(servers)]
			for i := 0; i < perCaller; i++ {
				req := &rlsv3.RateLimitRequest{Domain: "leaky-tokens", HitsAddend: 1,
					Descriptors: []*ratelimitv3.RateLimitDescriptor{desc("provider=openai,tier=free,user=hot"), desc("provider=openai")}}
				resp, err := s.client.ShouldRateLimit(context.Background(), req)
				if err != nil {
					t.Errorf("ShouldRateLimit: %v", err)
					return
				}
				if resp.OverallCode == rlsv3.RateLimitResponse_OK {
					admitted.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	return admitted.Load()
}

// 64 concurrent callers on one bucket of capacity 1000 (leaking 0.001
// tokens/s, under one token in the test's lifetime) admit exactly 1000.
func TestExactUnderContention(t *testing.T) {
	for _, kind := range []string{"memory", "redis"} {
		t.Run(kind, func(t *testing.T) {
			cfg := testConfig(t, kind, "policy.yaml")
			cfg.RedisTimeout = 5 * time.Second // count refusals, not timeouts of a loaded test machine
			s := start(t, cfg)
			if got := hammer(t, []*server{s}, 40); got != 1000 {
				t.Errorf("admitted %d of 2560 requests, want exactly the capacity 1000", got)
			}
		})
	}
}

// Two service instances sharing one Redis, or one Redis Cluster, never
// admit more than the capacity together. On the cluster the request's
// buckets (user, provider) are in two slots: a decision is two script
// calls, and a refusal at the second refunds the first.
func TestExactAcrossInstancesSharingRedis(t *testing.T) {
	for _, backend := range []struct {
		name string
		url  func(testing.TB) string
	}{{"redis", testenv.RedisURL}, {"redis cluster", testenv.RedisClusterURL}} {
		t.Run(backend.name, func(t *testing.T) {
			cfg := testConfig(t, "redis", "policy.yaml")
			cfg.RedisURL = backend.url(t)
			cfg.RedisTimeout = 5 * time.Second
			a := start(t, cfg)
			cfg2 := cfg
			b := start(t, cfg2)
			if got := hammer(t, []*server{a, b}, 40); got != 1000 {
				t.Errorf("admitted %d across two instances, want exactly 1000", got)
			}
		})
	}
}
