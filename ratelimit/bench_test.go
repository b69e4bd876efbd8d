package ratelimit

import (
	"context"
	"fmt"
	"log/slog"
	"testing"

	ratelimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
)

// BenchmarkShouldRateLimit measures one decision through the real gRPC
// server over loopback, client and server in this process, on the memory
// store: 10k users of the example policy, one descriptor, 1 token each.
func BenchmarkShouldRateLimit(b *testing.B) {
	cfg := DefaultConfig()
	cfg.GRPCAddr, cfg.HTTPAddr = "127.0.0.1:0", "127.0.0.1:0"
	s := start(b, cfg)
	reqs := make([]*rlsv3.RateLimitRequest, 10000)
	for i := range reqs {
		reqs[i] = &rlsv3.RateLimitRequest{Domain: "leaky-tokens", HitsAddend: 1, Descriptors: []*ratelimitv3.RateLimitDescriptor{
			desc(fmt.Sprintf("provider=openai,tier=free,user=u%d", i)),
		}}
	}
	b.SetParallelism(32)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			if _, err := s.client.ShouldRateLimit(context.Background(), reqs[i%len(reqs)]); err != nil {
				b.Error(err)
				return
			}
			i++
		}
	})
}

// BenchmarkDecideInProcess is the service's own work per decision, without
// gRPC: planning, the memory store, the answer.
func BenchmarkDecideInProcess(b *testing.B) {
	cfg := DefaultConfig()
	cfg.GRPCAddr, cfg.HTTPAddr = "127.0.0.1:0", "127.0.0.1:0"
	svc, err := New(cfg, slog.New(slog.DiscardHandler), testStore(b, cfg))
	if err != nil {
		b.Fatal(err)
	}
	defer svc.Close()
	req := &rlsv3.RateLimitRequest{Domain: "leaky-tokens", HitsAddend: 1, Descriptors: []*ratelimitv3.RateLimitDescriptor{
		desc("provider=openai,tier=free,user=u1"), desc("provider=openai"),
	}}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := svc.ShouldRateLimit(context.Background(), req); err != nil {
			b.Fatal(err)
		}
	}
}
