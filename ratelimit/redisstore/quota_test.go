package redisstore

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/leakytokens/leaky/internal/testenv"
	"github.com/leakytokens/leaky/ratelimit/store"
)

// Every quota key (window counter, balance, Once) has a TTL: the window's
// end plus the grace, the balance's BalanceTTL, OnceTTL; so do a window
// counter a window-only credit creates and the Once keys a seed marks.
func TestQuotaKeysHaveTTL(t *testing.T) {
	url := testenv.RedisURL(t)
	prefix := testenv.Prefix(t)
	s := open(t, Options{URL: url, Prefix: prefix, Timeout: 5 * time.Second})
	c := raw(t, url)
	ctx := context.Background()
	period := int64(time.Hour / time.Microsecond)
	it := store.Item{Key: "win", Algorithm: store.Quota, Limit: 10, Period: period, Hits: 4, Purchased: "pool"}
	if err := s.Seed(ctx, []store.Seed{{Item: it, Used: 0, Purchased: 5, Once: []string{"seeded"}}}); err != nil {
		t.Fatal(err)
	}
	if d, err := s.Decide(ctx, []store.Item{it}); err != nil || !d.Allowed {
		t.Fatalf("Decide = %+v, %v", d, err)
	}
	credit := store.Adjustment{Item: store.Item{Algorithm: store.Quota, Purchased: "pool"}, Delta: -3, Once: "saga"}
	win2 := it
	win2.Key = "win2"
	if err := s.Adjust(ctx, []store.Adjustment{credit, {Item: it, Delta: 2}, {Item: win2, Delta: -7, Once: "saga-w"}}); err != nil {
		t.Fatal(err)
	}
	want := map[string][2]time.Duration{
		prefix + "q:win":     {time.Hour + store.QuotaGrace - time.Minute, time.Hour + store.QuotaGrace + time.Second},
		prefix + "qb:pool":   {store.BalanceTTL - time.Minute, store.BalanceTTL},
		prefix + "qo:saga":   {store.OnceTTL - time.Minute, store.OnceTTL},
		prefix + "q:win2":    {time.Hour + store.QuotaGrace - time.Minute, time.Hour + store.QuotaGrace + time.Second},
		prefix + "qo:saga-w": {store.OnceTTL - time.Minute, store.OnceTTL},
		prefix + "qo:seeded": {store.OnceTTL - time.Minute, store.OnceTTL},
	}
	keys, err := c.Keys(ctx, prefix+"*").Result()
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != len(want) {
		t.Errorf("keys = %q, want %d", keys, len(want))
	}
	for key, bounds := range want {
		ttl, err := c.PTTL(ctx, key).Result()
		if err != nil || ttl < bounds[0] || ttl > bounds[1] {
			t.Errorf("key %s: TTL %v (%v), want within %v", strings.TrimPrefix(key, prefix), ttl, err, bounds)
		}
	}
	if v, _ := c.Get(ctx, prefix+"q:win").Int64(); v != 6 {
		t.Errorf("window counter = %d, want 4 used then a debit of 2", v)
	}
	if v, _ := c.Get(ctx, prefix+"q:win2").Int64(); v != -7 {
		t.Errorf("window-only credit's counter = %d, want -7", v)
	}
	if v, _ := c.Get(ctx, prefix+"qb:pool").Int64(); v != 8 {
		t.Errorf("balance = %d, want 5 + a credit of 3", v)
	}
}

// Losing the keys (a restart without persistence) makes the next decision
// ErrUnseeded, charging nothing, until the pool is seeded again.
func TestQuotaLostKeysUnseeded(t *testing.T) {
	url := testenv.RedisURL(t)
	prefix := testenv.Prefix(t)
	s := open(t, Options{URL: url, Prefix: prefix, Timeout: 5 * time.Second})
	c := raw(t, url)
	ctx := context.Background()
	it := store.Item{Key: "win", Algorithm: store.Quota, Limit: 10, Period: int64(time.Hour / time.Microsecond), Hits: 6, Purchased: "pool"}
	if err := s.Seed(ctx, []store.Seed{{Item: it}}); err != nil {
		t.Fatal(err)
	}
	if d, err := s.Decide(ctx, []store.Item{it}); err != nil || !d.Allowed {
		t.Fatalf("Decide = %+v, %v", d, err)
	}
	keys, _ := c.Keys(ctx, prefix+"*").Result()
	if err := c.Del(ctx, keys...).Err(); err != nil {
		t.Fatal(err)
	}
	g := store.Item{Key: "g", Algorithm: store.GCRA, Limit: 5, Period: 1000, Hits: 1}
	if _, err := s.Decide(ctx, []store.Item{g, it}); !errors.Is(err, store.ErrUnseeded) {
		t.Fatalf("Decide after the keys were lost = %v, want ErrUnseeded", err)
	}
	if n, _ := c.Exists(ctx, prefix+"g:g").Result(); n != 0 {
		t.Error("the refused decision charged the bucket")
	}
	if err := s.Seed(ctx, []store.Seed{{Item: it, Used: 6}}); err != nil {
		t.Fatal(err)
	}
	if d, err := s.Decide(ctx, []store.Item{g, it}); err != nil || d.Allowed || d.Results[1].Remaining != 4 {
		t.Fatalf("Decide after the seed = %+v, %v, want refused with 4 remaining", d, err)
	}
}

// A Once key lives its adjustment's OnceTTL (a settlement's minute), or
// store.OnceTTL when the adjustment names none.
func TestOnceKeyLifetime(t *testing.T) {
	url := testenv.RedisURL(t)
	s := open(t, Options{URL: url, Prefix: testenv.Prefix(t), Timeout: 5 * time.Second})
	c := raw(t, url)
	ctx := context.Background()
	g := store.Item{Key: "once-life", Algorithm: store.GCRA, Limit: 10, Period: sec}
	err := s.Adjust(ctx, []store.Adjustment{
		{Item: g, Delta: 1, Once: "settle:a:0", OnceTTL: time.Minute},
		{Item: g, Delta: 1, Once: "saga:a"},
	})
	if err != nil {
		t.Fatal(err)
	}
	short := c.PTTL(ctx, s.onceKey(g, "settle:a:0")).Val()
	long := c.PTTL(ctx, s.onceKey(g, "saga:a")).Val()
	if short <= 0 || short > time.Minute {
		t.Errorf("a settlement's Once key lives %v, want at most a minute", short)
	}
	if long < store.OnceTTL-time.Hour {
		t.Errorf("a credit's Once key lives %v, want store.OnceTTL", long)
	}
}
