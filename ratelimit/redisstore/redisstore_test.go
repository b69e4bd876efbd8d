package redisstore

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/redis/go-redis/v9"

	"github.com/leakytokens/leaky/internal/testenv"
	"github.com/leakytokens/leaky/ratelimit/gcra/gcratest"
	"github.com/leakytokens/leaky/ratelimit/store"
	"github.com/leakytokens/leaky/ratelimit/store/storetest"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

const sec = 1_000_000

// open returns a Store on url, closed when t ends.
func open(t testing.TB, opts Options) *Store {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := New(ctx, opts)
	if err != nil {
		t.Fatalf("New(%s): %v", opts.URL, err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// raw is a plain client for inspecting what the store wrote.
func raw(t testing.TB, url string) *redis.Client {
	t.Helper()
	o, err := redis.ParseURL(url)
	if err != nil {
		t.Fatal(err)
	}
	c := redis.NewClient(o)
	t.Cleanup(func() { c.Close() })
	return c
}

// TestContract runs the store contract. Stores opened for the same test
// share one prefix; each is its own client, so the two-instance case runs
// two real instances against one Redis. The generous timeout keeps a loaded
// machine from turning contention into errors.
func TestContract(t *testing.T) {
	url := testenv.RedisURL(t)
	prefix := prefixPerTest()
	storetest.Run(t, func(t *testing.T, now func() int64) store.Store {
		return open(t, Options{URL: url, Prefix: prefix(t), Timeout: 5 * time.Second, Now: now})
	})
}

// TestReserverContract runs the store.Reserver contract on real Redis; the
// two-scanner case opens two stores on one prefix, as two instances.
func TestReserverContract(t *testing.T) {
	url := testenv.RedisURL(t)
	prefix := prefixPerTest()
	storetest.RunReserver(t, func(t *testing.T, now func() int64) store.Reserver {
		return open(t, Options{URL: url, Prefix: prefix(t), Timeout: 5 * time.Second, Now: now})
	})
}

// TestSteps runs the gcra step table through the scripts: the Lua must
// compute what the Go reference computes, to the microsecond.
func TestSteps(t *testing.T) {
	steps := gcratest.Steps(t)
	url := testenv.RedisURL(t)
	var now atomic.Int64
	s := open(t, Options{URL: url, Prefix: testenv.Prefix(t), Timeout: 5 * time.Second, Now: now.Load})
	c := raw(t, url)
	ctx := context.Background()
	for i, st := range steps {
		t.Run(st.Name, func(t *testing.T) {
			it := store.Item{Key: fmt.Sprint("step", i), Limit: st.Burst, Period: st.Interval, Hits: st.N}
			key := s.key(it)
			if st.TAT == 0 {
				c.Del(ctx, key)
			} else if err := c.Set(ctx, key, st.TAT, time.Hour).Err(); err != nil {
				t.Fatal(err)
			}
			now.Store(st.Now)
			start := time.Now()
			switch st.Op {
			case "decide":
				d, err := s.Decide(ctx, []store.Item{it})
				if err != nil {
					t.Fatalf("Decide: %v", err)
				}
				w := st.Want
				want := store.Decision{Allowed: w.Allowed, Results: []store.Result{{Allowed: w.Allowed, Remaining: w.Remaining, RetryAfter: w.RetryAfter, ResetAfter: w.ResetAfter}}}
				if diff := cmp.Diff(want, d); diff != "" {
					t.Errorf("Decide(now %d, tat %d, burst %d, interval %d, n %d) (-want +got):\n%s", st.Now, st.TAT, st.Burst, st.Interval, st.N, diff)
				}
			case "adjust":
				if err := s.Adjust(ctx, []store.Adjustment{{Item: it, Delta: st.Delta}}); err != nil {
					t.Fatalf("Adjust: %v", err)
				}
			default:
				t.Fatalf("unknown op %q", st.Op)
			}
			// A bucket at or before now may be deleted: compare max(stored, now).
			got := st.Now
			v, err := c.Get(ctx, key).Result()
			switch {
			case errors.Is(err, redis.Nil) && time.Since(start) > time.Duration(st.WantTAT-st.Now)*time.Microsecond:
				// The key's TTL, set from the step's time, ran out in real
				// time before this read: nothing left to compare.
				t.Logf("stored TAT expired before it was read")
				return
			case errors.Is(err, redis.Nil):
			case err != nil:
				t.Fatal(err)
			default:
				tat, err := strconv.ParseInt(v, 10, 64)
				if err != nil {
					t.Fatalf("stored TAT %q: %v", v, err)
				}
				got = max(tat, st.Now)
			}
			if got != st.WantTAT {
				t.Errorf("stored TAT = %d, want %d", got, st.WantTAT)
			}
		})
	}
}

// TestRedisTime decides on Redis TIME, the production clock.
func TestRedisTime(t *testing.T) {
	s := open(t, Options{URL: testenv.RedisURL(t), Prefix: testenv.Prefix(t), Timeout: 5 * time.Second})
	ctx := context.Background()
	it := store.Item{Key: "k", Limit: 2, Period: 3600 * sec, Hits: 1}
	for range 2 {
		if d, err := s.Decide(ctx, []store.Item{it}); err != nil || !d.Allowed {
			t.Fatalf("Decide = %+v, %v, want allowed", d, err)
		}
	}
	d, err := s.Decide(ctx, []store.Item{it})
	if err != nil {
		t.Fatal(err)
	}
	// The third token waits one interval, less the time the test took.
	if r := d.Results[0]; d.Allowed || r.RetryAfter > 3600*sec || r.RetryAfter < 3590*sec {
		t.Errorf("third Decide = %+v, want refused with RetryAfter just under 3600 s", d)
	}
	w := store.Item{Key: "w", Algorithm: store.FixedWindow, Limit: 5, Period: 60 * sec, Hits: 1}
	d, err = s.Decide(ctx, []store.Item{w})
	if err != nil {
		t.Fatal(err)
	}
	if r := d.Results[0]; !d.Allowed || r.Remaining != 4 || r.ResetAfter <= 0 || r.ResetAfter > 60*sec {
		t.Errorf("window Decide = %+v, want allowed, 4 remaining, reset within 60 s", d)
	}
}

// TestScriptFlush: after the script cache is emptied (as by a restart),
// decisions and adjustments still work and the state is kept.
func TestScriptFlush(t *testing.T) {
	srv := testenv.StartRedis(t) // private: SCRIPT FLUSH would disturb other tests
	s := open(t, Options{URL: srv.URL, Timeout: 5 * time.Second})
	c := raw(t, srv.URL)
	ctx := context.Background()
	it := store.Item{Key: "k", Limit: 3, Period: 3600 * sec, Hits: 1}
	if _, err := s.Decide(ctx, []store.Item{it}); err != nil {
		t.Fatal(err)
	}
	for _, step := range []string{"decide", "adjust", "decide again"} {
		if err := c.ScriptFlush(ctx).Err(); err != nil {
			t.Fatal(err)
		}
		var err error
		if step == "adjust" {
			err = s.Adjust(ctx, []store.Adjustment{{Item: it, Delta: 1}})
		} else {
			_, err = s.Decide(ctx, []store.Item{it})
		}
		if err != nil {
			t.Fatalf("%s after SCRIPT FLUSH: %v", step, err)
		}
	}
	// 1 + 1 + debit 1 + 1 = 4 > 3: the last decision was refused and the
	// state survived the flushes.
	d, err := s.Decide(ctx, []store.Item{{Key: "k", Limit: 3, Period: 3600 * sec}})
	if err != nil {
		t.Fatal(err)
	}
	if got := d.Results[0].Remaining; got != 0 {
		t.Errorf("remaining after the flushes = %d, want 0", got)
	}
	// The EVAL fallback cached the script again: the next call is an EVALSHA.
	exists, err := c.ScriptExists(ctx, s.decide.Hash()).Result()
	if err != nil {
		t.Fatal(err)
	}
	if !exists[0] {
		t.Error("SCRIPT EXISTS after the fallback = false, want the decide script cached again")
	}
}

// TestEveryKeyHasTTL runs a mixed load and then checks, key by key, that
// nothing lives forever and that TTLs end near the moment a bucket is idle.
func TestEveryKeyHasTTL(t *testing.T) {
	url := testenv.RedisURL(t)
	prefix := testenv.Prefix(t)
	s := open(t, Options{URL: url, Prefix: prefix, Timeout: 5 * time.Second})
	c := raw(t, url)
	ctx := context.Background()
	for i := range 300 {
		key := fmt.Sprint("k", i%100)
		items := []store.Item{
			{Key: key, Limit: 10, Period: sec, Hits: int64(i % 4)},
			{Key: key, Algorithm: store.FixedWindow, Limit: 10, Period: 60 * sec, Hits: 1, Shadow: true},
			{Key: "shared", Limit: 1000, Period: 10 * sec, Hits: 1},
		}
		if _, err := s.Decide(ctx, items); err != nil {
			t.Fatal(err)
		}
		adj := []store.Adjustment{{Item: items[0], Delta: int64(i%7 - 3)}, {Item: items[1], Delta: int64(i%5 - 2)}}
		if err := s.Adjust(ctx, adj); err != nil {
			t.Fatal(err)
		}
	}
	// A huge debit gets a TTL too.
	if err := s.Adjust(ctx, []store.Adjustment{{Item: store.Item{Key: "debt", Limit: 1, Period: 1}, Delta: 1 << 62}}); err != nil {
		t.Fatal(err)
	}
	// Reservation records and their index, opened, taken and claimed.
	for i := range 20 {
		id := fmt.Sprint("res-", i)
		if err := s.OpenReservation(ctx, id, []byte("rec"), time.Duration(1+i%3)*time.Minute); err != nil {
			t.Fatal(err)
		}
		if i%2 == 0 {
			if _, _, err := s.TakeReservation(ctx, id, "nonce"); err != nil {
				t.Fatal(err)
			}
		}
		dec, err := s.DecideReserve(ctx, []store.Item{{Key: "rsv", Limit: 1000, Period: sec, Hits: 1}}, "d"+id, []byte("rec"), time.Minute)
		if err != nil || !dec.Allowed {
			t.Fatalf("DecideReserve = %+v, %v", dec, err)
		}
	}
	maxRes := 3*time.Minute + store.ReservationGrace
	n := 0
	iter := c.Scan(ctx, 0, prefix+"*", 1000).Iterator()
	for iter.Next(ctx) {
		key := iter.Val()
		n++
		ttl, err := c.PTTL(ctx, key).Result()
		if err != nil {
			t.Fatal(err)
		}
		if ttl == -1 {
			t.Errorf("key %s has no TTL", key)
		}
		if strings.HasPrefix(key, prefix+"g:k") && ttl > 30*time.Second {
			t.Errorf("GCRA key %s has TTL %v, want at most its span and debt, under 30 s", key, ttl)
		}
		if (strings.HasPrefix(key, prefix+"r:") || key == prefix+"rx") && ttl > maxRes {
			t.Errorf("reservation key %s has TTL %v, want at most the longest reservation's plus the grace, %v", key, ttl, maxRes)
		}
		if strings.HasPrefix(key, prefix+"rt:") && ttl > store.ReservationLease {
			t.Errorf("lease key %s has TTL %v, want at most %v", key, ttl, store.ReservationLease)
		}
		if strings.HasPrefix(key, prefix+"w:") && ttl > 62*time.Second {
			t.Errorf("window key %s has TTL %v, want at most the window plus 1 s", key, ttl)
		}
	}
	if err := iter.Err(); err != nil {
		t.Fatal(err)
	}
	if n < 100 {
		t.Errorf("scan found %d keys, want the load's keys", n)
	}
}

func TestNewFails(t *testing.T) {
	tests := []struct {
		name string
		url  string
	}{
		{"bad scheme", "http://127.0.0.1:1"},
		{"nothing listening", unusedURL(t)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			if s, err := New(ctx, Options{URL: tc.url}); err == nil {
				s.Close()
				t.Errorf("New(%s) = nil error, want an error", tc.url)
			}
		})
	}
}

// unusedURL is a Redis URL where nothing listens.
func unusedURL(t *testing.T) string {
	port, err := testenv.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("redis://127.0.0.1:%d/0", port)
}

// A URL that does not parse is refused without repeating it: it may hold a
// password.
func TestBadURLHidesPassword(t *testing.T) {
	_, err := New(context.Background(), Options{URL: "redis://:s3cr%t@127.0.0.1:6379/0"})
	if err == nil || strings.Contains(err.Error(), "s3cr") {
		t.Errorf("New(bad URL) = %v, want an error without the password", err)
	}
}
