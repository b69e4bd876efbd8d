package redisstore

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/redis/go-redis/v9"

	"github.com/leakytokens/leaky/internal/testenv"
	"github.com/leakytokens/leaky/ratelimit/store"
	"github.com/leakytokens/leaky/ratelimit/store/storetest"
)

// rawCluster is a plain cluster client for inspecting what the store wrote.
func rawCluster(t testing.TB, url string) *redis.ClusterClient {
	t.Helper()
	o, err := parseClusterURL(url)
	if err != nil {
		t.Fatal(err)
	}
	c := redis.NewClusterClient(o)
	t.Cleanup(func() { c.Close() })
	return c
}

// prefixPerTest returns an opener's prefix: one per test t, shared by the
// stores opened for it.
func prefixPerTest() func(t *testing.T) string {
	var mu sync.Mutex
	prefixes := map[*testing.T]string{}
	return func(t *testing.T) string {
		mu.Lock()
		defer mu.Unlock()
		p, ok := prefixes[t]
		if !ok {
			p = testenv.Prefix(t)
			prefixes[t] = p
		}
		return p
	}
}

// TestClusterContract runs the store contract on a 3-master cluster: its
// multi-item cases span slots, so they run through the grouping and the
// compensation.
func TestClusterContract(t *testing.T) {
	url := testenv.RedisClusterURL(t)
	prefix := prefixPerTest()
	storetest.Run(t, func(t *testing.T, now func() int64) store.Store {
		return open(t, Options{URL: url, Prefix: prefix(t), Timeout: 5 * time.Second, Now: now})
	})
}

// TestClusterReserverContract runs the store.Reserver contract on a
// cluster (DecideReserve: the groups, then the record under "{rx}").
func TestClusterReserverContract(t *testing.T) {
	url := testenv.RedisClusterURL(t)
	prefix := prefixPerTest()
	storetest.RunReserver(t, func(t *testing.T, now func() int64) store.Reserver {
		return open(t, Options{URL: url, Prefix: prefix(t), Timeout: 5 * time.Second, Now: now})
	})
}

// keysInSlots returns n ≤ 3 GCRA item keys starting with name, each in
// another master's slots (the ranges redis-cli gives 3 masters), in slot
// order.
func keysInSlots(s *Store, n int, name string) []string {
	ranges := [][2]int{{0, 5460}, {5461, 10922}, {10923, 16383}}
	var keys []string
	for i := 0; len(keys) < n; i++ {
		k := fmt.Sprint(name, i)
		if sl := s.itemSlot(store.Item{Key: k}); sl >= ranges[len(keys)][0] && sl <= ranges[len(keys)][1] {
			keys = append(keys, k)
		}
	}
	return keys
}

// TestClusterAllOrNothingAcrossSlots: a decision over three slots (three
// masters) is admitted only when all three admit; a refusal at any group
// leaves every bucket as it was, read back from the cluster.
func TestClusterAllOrNothingAcrossSlots(t *testing.T) {
	url := testenv.RedisClusterURL(t)
	s := open(t, Options{URL: url, Prefix: testenv.Prefix(t), Timeout: 5 * time.Second})
	c := rawCluster(t, url)
	ctx := context.Background()
	for refuse := range 3 { // the group in slot order that refuses
		t.Run(fmt.Sprint("refused at group ", refuse), func(t *testing.T) {
			items := make([]store.Item, 3)
			for i, k := range keysInSlots(s, 3, fmt.Sprint("r", refuse, ":")) {
				items[i] = store.Item{Key: k, Limit: 10, Period: 3600 * sec, Hits: 3}
			}
			if s.itemSlot(items[0]) == s.itemSlot(items[1]) || s.itemSlot(items[1]) == s.itemSlot(items[2]) {
				t.Fatalf("items share a slot")
			}
			full := items[refuse]
			full.Hits = 10
			if d, err := s.Decide(ctx, []store.Item{full}); err != nil || !d.Allowed {
				t.Fatalf("fill %s: %+v, %v", full.Key, d, err)
			}
			d, err := s.Decide(ctx, items)
			if err != nil {
				t.Fatal(err)
			}
			if d.Allowed {
				t.Fatalf("decision over a full bucket admitted: %+v", d)
			}
			for i, it := range items {
				r := d.Results[i]
				if i == refuse {
					if r.Allowed || r.Remaining != 0 {
						t.Errorf("refusing item %d: %+v, want refused with 0 left", i, r)
					}
					continue
				}
				// The others report their untouched, fresh buckets.
				if diff := cmp.Diff(store.Result{Allowed: true, Remaining: 10}, r); diff != "" {
					t.Errorf("item %d in a refused decision (-want +got):\n%s", i, diff)
				}
				// Refunded to empty: the bucket's key is gone.
				if n, err := c.Exists(ctx, s.key(it)).Result(); err != nil || n != 0 {
					t.Errorf("bucket %s after the refusal: exists = %d, %v; want refunded to nothing", it.Key, n, err)
				}
				check := it
				check.Hits = 0
				if d, err := s.Decide(ctx, []store.Item{check}); err != nil || d.Results[0].Remaining != 10 {
					t.Errorf("bucket %s after the refusal: %+v, %v; want 10 left", it.Key, d, err)
				}
			}
			// With room everywhere the same decision charges all three.
			free := items
			free[refuse].Key += ":free"
			d, err = s.Decide(ctx, free)
			if err != nil || !d.Allowed {
				t.Fatalf("decision with room: %+v, %v", d, err)
			}
			for i, r := range d.Results {
				if r.Remaining != 7 {
					t.Errorf("item %d admitted: %+v, want 7 left", i, r)
				}
			}
		})
	}
}

// TestClusterCompensationRefundsPurchased: a quota item that took from
// its purchased balance, in a decision refused at a later slot, gets the
// tokens back where they came from: the balance and the window.
func TestClusterCompensationRefundsPurchased(t *testing.T) {
	url := testenv.RedisClusterURL(t)
	s := open(t, Options{URL: url, Prefix: testenv.Prefix(t), Timeout: 5 * time.Second})
	c := rawCluster(t, url)
	ctx := context.Background()
	keys := keysInSlots(s, 2, "pool")
	q := store.Item{Key: "win", Algorithm: store.Quota, Limit: 5, Period: 3600 * sec, Hits: 8, Purchased: keys[0]}
	if err := s.Seed(ctx, []store.Seed{{Item: q, Used: 1, Purchased: 20}}); err != nil {
		t.Fatal(err)
	}
	// A bucket in the higher slot that refuses.
	g := store.Item{Key: keys[1], Limit: 1, Period: 3600 * sec, Hits: 2}
	if s.itemSlot(q) >= s.itemSlot(g) {
		t.Fatalf("quota slot %d not before bucket slot %d", s.itemSlot(q), s.itemSlot(g))
	}
	d, err := s.Decide(ctx, []store.Item{q, g})
	if err != nil || d.Allowed {
		t.Fatalf("Decide = %+v, %v; want refused", d, err)
	}
	want := store.Result{Allowed: true, Remaining: 5 - 1 + 20, ResetAfter: 3600 * sec}
	if diff := cmp.Diff(want, d.Results[0]); diff != "" {
		t.Errorf("quota result in the refusal (-want +got):\n%s", diff)
	}
	for key, want := range map[string]string{s.key(q): "1", s.balanceKey(q): "20"} {
		if got, err := c.Get(ctx, key).Result(); err != nil || got != want {
			t.Errorf("%s = %q, %v; want %s", key, got, err, want)
		}
	}
}

// TestClusterKeys: every key of an item is in one slot, Redis agrees with
// slotOf, and a single Redis's keys are unchanged.
func TestClusterKeys(t *testing.T) {
	url := testenv.RedisClusterURL(t)
	s := open(t, Options{URL: url, Prefix: "p:", Timeout: 5 * time.Second})
	c := rawCluster(t, url)
	ctx := context.Background()
	quota := store.Item{Key: "user:a:1700", Algorithm: store.Quota, Purchased: "user:a"}
	tests := []struct {
		name string
		keys []string
		want []string
	}{
		{"gcra", []string{s.key(store.Item{Key: "u:1"})}, []string{"p:g:{u:1}"}},
		{"window", []string{s.key(store.Item{Key: "u:1", Algorithm: store.FixedWindow})}, []string{"p:w:{u:1}"}},
		{"brace in key", []string{s.key(store.Item{Key: "a}b"})}, nil},
		{"quota", []string{s.key(quota), s.balanceKey(quota), s.genKey(quota), s.onceKey(quota, "saga:1")},
			[]string{"p:q:{user:a}user:a:1700", "p:qb:{user:a}", "p:qg:{user:a}", "p:qo:{user:a}saga:1"}},
		{"quota without balance", []string{s.key(store.Item{Key: "w", Algorithm: store.Quota})}, []string{"p:q:{w}"}},
		{"reservations", []string{s.recordKey("id"), s.indexKey(), s.leaseKey("id", "n")},
			[]string{"p:{rx}r:id", "p:{rx}rx", "p:{rx}rt:n:id"}},
	}
	for _, tc := range tests {
		if tc.want != nil {
			if diff := cmp.Diff(tc.want, tc.keys); diff != "" {
				t.Errorf("%s keys (-want +got):\n%s", tc.name, diff)
			}
		}
		for _, k := range tc.keys {
			got, err := c.ClusterKeySlot(ctx, k).Result()
			if err != nil {
				t.Fatal(err)
			}
			if int(got) != slotOf(k) || slotOf(k) != slotOf(tc.keys[0]) {
				t.Errorf("%s: key %q in slot %d (slotOf %d), first key's %d", tc.name, k, got, slotOf(k), slotOf(tc.keys[0]))
			}
		}
	}
	single := open(t, Options{URL: testenv.RedisURL(t), Prefix: "p:", Timeout: 5 * time.Second})
	if got := []string{single.key(quota), single.balanceKey(quota), single.onceKey(quota, "o"), single.indexKey()}; !cmp.Equal(got,
		[]string{"p:q:user:a:1700", "p:qb:user:a", "p:qo:o", "p:rx"}) {
		t.Errorf("single Redis keys = %q, want them untagged", got)
	}
}

// TestClusterURL: the node list, credentials and query of a cluster URL;
// a malformed one is refused without quoting its password.
func TestClusterURL(t *testing.T) {
	tests := []struct {
		url       string
		addrs     []string
		user, pwd string
		tls       bool
	}{
		{url: "redis+cluster://127.0.0.1:7000,127.0.0.1:7001", addrs: []string{"127.0.0.1:7000", "127.0.0.1:7001"}},
		{url: "redis+cluster://u:secret@h1:1,h2:2/?client_name=x", addrs: []string{"h1:1", "h2:2"}, user: "u", pwd: "secret"},
		{url: "rediss+cluster://[::1]:7000", addrs: []string{"[::1]:7000"}, tls: true},
	}
	for _, tc := range tests {
		o, err := parseClusterURL(tc.url)
		if err != nil {
			t.Errorf("parseClusterURL(%q): %v", tc.url, err)
			continue
		}
		if !cmp.Equal(o.Addrs, tc.addrs) || o.Username != tc.user || o.Password != tc.pwd || (o.TLSConfig != nil) != tc.tls {
			t.Errorf("parseClusterURL(%q) = addrs %q user %q password %q tls %v", tc.url, o.Addrs, o.Username, o.Password, o.TLSConfig != nil)
		}
	}
	for _, bad := range []string{
		"redis+cluster://u:hunter2@h1:1,h2", "redis+cluster://u:hunter2@h1:1/3", "redis+cluster://u:hunter2@:1",
		"redis+cluster://u:hunter2@h:99999", "redis+cluster://u:hunter2@h:1?nonsense=1", "redis+cluster://",
	} {
		_, err := New(context.Background(), Options{URL: bad})
		if err == nil || strings.Contains(err.Error(), "hunter2") {
			t.Errorf("New(%q) = %v, want an error without the password", bad, err)
		}
	}
	if _, err := New(context.Background(), Options{URL: "redis+cluster://127.0.0.1:1", Prefix: "a{b}:"}); err == nil {
		t.Error("New with a braced prefix on a cluster succeeded")
	}
}
