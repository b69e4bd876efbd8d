package redisstore

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/leakytokens/leaky/internal/testenv"
	"github.com/leakytokens/leaky/ratelimit/store"
)

// clusterLoad runs decisions over fixed sets of buckets from several
// goroutines, counting per set its admissions, refusals and errors, and per
// bucket the admissions that charged it.
type clusterLoad struct {
	s        *Store
	buckets  []store.Item
	sets     [][]int // indexes into buckets
	admitted []atomic.Int64
	refused  []atomic.Int64 // per set
	failed   []atomic.Int64 // per set
	ok       []atomic.Int64 // per set: admitted or refused
	stop     chan struct{}
	once     sync.Once
	wg       sync.WaitGroup
	mu       sync.Mutex
	kinds    map[string]int
}

func startClusterLoad(s *Store, buckets []store.Item, sets [][]int) *clusterLoad {
	l := &clusterLoad{s: s, buckets: buckets, sets: sets, admitted: make([]atomic.Int64, len(buckets)),
		refused: make([]atomic.Int64, len(sets)), failed: make([]atomic.Int64, len(sets)),
		ok: make([]atomic.Int64, len(sets)), stop: make(chan struct{}), kinds: map[string]int{}}
	for w := range 4 * len(sets) {
		set := w % len(sets)
		l.wg.Go(func() {
			items := make([]store.Item, len(sets[set]))
			for j, b := range sets[set] {
				items[j] = buckets[b]
			}
			for {
				select {
				case <-l.stop:
					return
				default:
				}
				d, err := s.Decide(context.Background(), items)
				switch {
				case err != nil:
					l.failed[set].Add(1)
					l.mu.Lock()
					l.kinds[ErrorKind(err)]++
					l.mu.Unlock()
					time.Sleep(5 * time.Millisecond)
				case d.Allowed:
					for _, b := range sets[set] {
						l.admitted[b].Add(1)
					}
					l.ok[set].Add(1)
				default:
					l.refused[set].Add(1)
					l.ok[set].Add(1)
				}
			}
		})
	}
	return l
}

func (l *clusterLoad) end() {
	l.once.Do(func() { close(l.stop) })
	l.wg.Wait()
}

// waitFor polls cond every 20 ms for up to d.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %v: %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestClusterNodeKill: one master of a private cluster is killed mid-load.
// Decisions touching its slots fail (the service answers them by its
// failure mode), the others go on; no bucket ever admits beyond its
// capacity; once the node is restarted (its port, directory and data) the
// cluster serves again, and every bucket's charge equals its admissions
// (compensations ran), but for the killed node's bucket, which may also
// keep the charges of calls it ran just before it died without answering
// (over-charge, never over-admission).
func TestClusterNodeKill(t *testing.T) {
	c := testenv.StartRedisCluster(t)
	s := open(t, Options{URL: c.URL, Prefix: testenv.Prefix(t), Timeout: time.Second})
	const capacity = 400
	var buckets []store.Item
	for _, k := range keysInSlots(s, 3, "kill") { // one per master, in node order
		buckets = append(buckets, store.Item{Key: k, Limit: capacity, Period: 3600 * sec, Hits: 1})
	}
	victim := c.Nodes[1] // the master of buckets[1]'s slot range
	// Sets in slot order; a compensation only ever refunds buckets[0] or
	// buckets[1] on the way to a later group, and buckets[0] never dies.
	sets := [][]int{{0, 2}, {0, 1}, {1}, {2}}
	const away, touching = 0, 2 // a set off the victim; one only on it
	l := startClusterLoad(s, buckets, sets)
	defer l.end()
	waitFor(t, 60*time.Second, "100 decisions before the kill", func() bool { return l.ok[away].Load() >= 100 })

	victim.Kill()
	before := [2]int64{l.ok[away].Load(), l.failed[touching].Load()}
	waitFor(t, 60*time.Second, "decisions on the killed node's slots failing while others go on", func() bool {
		return l.failed[touching].Load()-before[1] >= 20 && l.ok[away].Load()-before[0] >= 50
	})
	if err := victim.Restart(); err != nil {
		t.Fatalf("restart: %v", err)
	}
	if err := c.WaitOK(60 * time.Second); err != nil {
		t.Fatal(err)
	}
	ok := l.ok[touching].Load()
	waitFor(t, 60*time.Second, "decisions on the restarted node's slots", func() bool { return l.ok[touching].Load() >= ok+20 })
	l.end()

	l.mu.Lock()
	t.Logf("error kinds: %v; failed per set %v", l.kinds, []int64{l.failed[0].Load(), l.failed[1].Load(), l.failed[2].Load(), l.failed[3].Load()})
	l.mu.Unlock()
	for b, it := range buckets {
		admitted := l.admitted[b].Load()
		if admitted > capacity {
			t.Errorf("bucket %d admitted %d, capacity %d", b, admitted, capacity)
		}
		check := it
		check.Hits = 0
		d, err := s.Decide(context.Background(), []store.Item{check})
		if err != nil {
			t.Fatal(err)
		}
		charged := capacity - d.Results[0].Remaining
		switch {
		case b != 1 && charged != admitted:
			t.Errorf("bucket %d: charged %d, admitted %d; want equal once compensations ran", b, charged, admitted)
		case b == 1 && (charged < admitted || charged > admitted+int64(4*len(sets))):
			t.Errorf("killed node's bucket: charged %d, admitted %d; want admitted up to the calls in flight at the kill more", charged, admitted)
		}
	}
	if n := l.kinds["other"] + l.kinds["script"]; n != 0 {
		t.Errorf("%d decisions failed with other errors than connection or timeout", n)
	}
	if l.failed[away].Load() != 0 || l.failed[3].Load() != 0 {
		t.Errorf("decisions off the killed node failed: %d and %d", l.failed[away].Load(), l.failed[3].Load())
	}
}

// TestClusterRefusalStandsWhenALaterNodeIsDown: a decision refused at its
// first group stays a refusal when a later group's master is down (its
// dry run fails), rather than becoming a store error that a fail-open
// domain would answer by admitting the request.
func TestClusterRefusalStandsWhenALaterNodeIsDown(t *testing.T) {
	c := testenv.StartRedisCluster(t)
	s := open(t, Options{URL: c.URL, Prefix: testenv.Prefix(t), Timeout: time.Second})
	keys := keysInSlots(s, 3, "down")
	full := store.Item{Key: keys[0], Limit: 1, Period: 3600 * sec, Hits: 1}
	if d, err := s.Decide(context.Background(), []store.Item{full}); err != nil || !d.Allowed {
		t.Fatalf("filling the first bucket: %+v, %v", d, err)
	}
	c.Nodes[2].Kill()
	later := store.Item{Key: keys[2], Limit: 10, Period: 3600 * sec, Hits: 1}
	d, err := s.Decide(context.Background(), []store.Item{full, later})
	if err != nil || d.Allowed || d.Results[0].Allowed {
		t.Errorf("Decide(full bucket, bucket on a dead master) = %+v, %v; want refused by the first, no error", d, err)
	}
}
