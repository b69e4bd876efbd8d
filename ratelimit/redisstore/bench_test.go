package redisstore

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/leakytokens/leaky/internal/testenv"
	"github.com/leakytokens/leaky/ratelimit/store"
)

// BenchmarkDecideParallel measures one-item decisions over 10k keys from
// parallel goroutines against the shared Redis, the harness of DESIGN §8
// without gRPC. Run with -cpu to vary the parallelism.
func BenchmarkDecideParallel(b *testing.B) {
	s := open(b, Options{URL: testenv.RedisURL(b), Prefix: testenv.Prefix(b), Timeout: time.Second})
	keys := make([]string, 10_000)
	for i := range keys {
		keys[i] = fmt.Sprintf("user:%d", i)
	}
	var next atomic.Uint64
	b.ReportAllocs()
	b.SetParallelism(32) // 64 callers on 2 CPUs
	b.RunParallel(func(pb *testing.PB) {
		items := []store.Item{{Limit: 1 << 30, Period: 1000, Hits: 1}}
		for pb.Next() {
			items[0].Key = keys[next.Add(1)%uint64(len(keys))]
			if _, err := s.Decide(context.Background(), items); err != nil {
				b.Fatal(err)
			}
		}
	})
}
