package redisstore

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/leakytokens/leaky/internal/testenv"
	"github.com/leakytokens/leaky/ratelimit/store"
	"github.com/leakytokens/leaky/ratelimit/store/storetest"
)

// TestMatchesMemory drives the scripts and store.Memory, the reference,
// with the same random decisions, adjustments and clock steps, and requires
// identical answers: duplicate keys, shadow items, windows of odd lengths,
// debt and clamps included.
//
// Redis expires keys in real time while this test's clock jumps, so every
// period and step is a multiple of an hour: a written bucket then stays
// busy for at least about an hour of simulated time, and its TTL outlives
// the test. The odd start keeps window boundaries off the clock's grid.
func TestMatchesMemory(t *testing.T) {
	const hour = 3600 * sec
	clock := &storetest.Clock{}
	clock.Set(storetest.Start + 123_457)
	s := open(t, Options{URL: testenv.RedisURL(t), Prefix: testenv.Prefix(t), Timeout: 5 * time.Second, Now: clock.Now})
	m := store.NewMemory(store.MemoryOptions{Now: clock.Now})
	rng := rand.New(rand.NewPCG(1, 2))
	periods := []int64{hour, 7 * hour, 13 * hour, 24 * hour, 333 * hour}
	item := func() store.Item {
		k, alg := rng.IntN(6), rng.IntN(2)
		it := store.Item{
			Key:       fmt.Sprint("k", k),
			Algorithm: store.Algorithm(alg),
			Limit:     1 + rng.Int64N(10),
			Period:    periods[rng.IntN(len(periods))],
			Hits:      rng.Int64N(6),
			Shadow:    rng.IntN(5) == 0,
		}
		// Keys keep one limit and period per algorithm most of the time.
		if rng.IntN(4) != 0 {
			it.Limit, it.Period = 5, periods[(k+alg)%len(periods)]
		}
		return it
	}
	ctx := context.Background()
	for step := range 3000 {
		switch rng.IntN(10) {
		case 0, 1:
			clock.Advance(hour * rng.Int64N(40))
		case 2:
			adj := []store.Adjustment{{Item: item(), Delta: rng.Int64N(21) - 10}}
			if rng.IntN(50) == 0 {
				adj[0].Delta = 1 << 62
			}
			errS, errM := s.Adjust(ctx, adj), m.Adjust(ctx, adj)
			if (errS == nil) != (errM == nil) {
				t.Fatalf("step %d: Adjust(%+v) = %v from Redis, %v from Memory", step, adj, errS, errM)
			}
		default:
			items := make([]store.Item, 1+rng.IntN(4))
			for i := range items {
				items[i] = item()
			}
			got, errS := s.Decide(ctx, items)
			want, errM := m.Decide(ctx, items)
			if errS != nil || errM != nil {
				t.Fatalf("step %d: Decide(%+v) errors: Redis %v, Memory %v", step, items, errS, errM)
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Fatalf("step %d at +%d µs: Decide(%+v) (-memory +redis):\n%s", step, clock.Now()-storetest.Start, items, diff)
			}
		}
	}
}
