package redisstore

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/leakytokens/leaky/internal/testenv"
	"github.com/leakytokens/leaky/ratelimit/store"
)

// load runs Decide from 8 goroutines until stop is called, recording the
// slowest call and the kinds of errors seen.
type load struct {
	s       *Store
	stop    chan struct{}
	wg      sync.WaitGroup
	slowest atomic.Int64 // ns
	mu      sync.Mutex
	kinds   map[string]int
}

func startLoad(s *Store) *load {
	l := &load{s: s, stop: make(chan struct{}), kinds: map[string]int{}}
	for w := range 8 {
		l.wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-l.stop:
					return
				default:
				}
				it := store.Item{Key: fmt.Sprint(w, ":", i%50), Limit: 100, Period: sec, Hits: 1}
				start := time.Now()
				_, err := s.Decide(context.Background(), []store.Item{it})
				for d := int64(time.Since(start)); ; {
					old := l.slowest.Load()
					if d <= old || l.slowest.CompareAndSwap(old, d) {
						break
					}
				}
				if err != nil {
					l.mu.Lock()
					l.kinds[ErrorKind(err)]++
					l.mu.Unlock()
					time.Sleep(time.Millisecond)
				}
			}
		})
	}
	return l
}

// reset clears the record and returns what it held.
func (l *load) reset() (slowest time.Duration, kinds map[string]int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	kinds, l.kinds = l.kinds, map[string]int{}
	return time.Duration(l.slowest.Swap(0)), kinds
}

func (l *load) end() {
	close(l.stop)
	l.wg.Wait()
}

// waitDecide retries a decision until it succeeds or d passes.
func waitDecide(t *testing.T, s *Store, d time.Duration) {
	t.Helper()
	it := store.Item{Key: "probe", Limit: 1000, Period: sec, Hits: 1}
	deadline := time.Now().Add(d)
	for {
		_, err := s.Decide(context.Background(), []store.Item{it})
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no successful decision within %v of recovery: last error %v (%s)", d, err, ErrorKind(err))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestKillMidLoad: with Redis killed, every call fails promptly with a
// connection or timeout error; after a restart the same Store recovers.
func TestKillMidLoad(t *testing.T) {
	srv := testenv.StartRedis(t)
	s := open(t, Options{URL: srv.URL}) // the default 15 ms deadline
	waitDecide(t, s, 30*time.Second)
	l := startLoad(s)
	defer l.end()
	time.Sleep(200 * time.Millisecond)
	l.reset()

	srv.Kill()
	// Collect until the load has met the dead server a good many times, not
	// for a fixed while: on a loaded machine the workers may barely run.
	var slowest time.Duration
	kinds := map[string]int{}
	for deadline := time.Now().Add(30 * time.Second); ; {
		time.Sleep(100 * time.Millisecond)
		sl, k := l.reset()
		slowest = max(slowest, sl)
		total := 0
		for kind, n := range k {
			kinds[kind] += n
		}
		for _, n := range kinds {
			total += n
		}
		if total >= 50 || time.Now().After(deadline) {
			break
		}
	}
	t.Logf("with Redis dead: slowest call %v, error kinds %v", slowest, kinds)
	// A bound against a hang (retries, dial back-offs) with a margin for a
	// descheduled call, not a measure of the 15 ms deadline.
	if slowest >= 2*time.Second {
		t.Errorf("slowest call with Redis dead took %v, want well under 2 s", slowest)
	}
	if kinds["connection"]+kinds["timeout"] == 0 {
		t.Errorf("error kinds with Redis dead = %v, want connection or timeout errors", kinds)
	}
	for k := range kinds {
		if k != "connection" && k != "timeout" {
			t.Errorf("error kinds with Redis dead = %v, want only connection and timeout", kinds)
		}
	}
	if err := s.Ping(context.Background()); err == nil {
		t.Error("Ping with Redis dead = nil, want an error")
	}

	if err := srv.Restart(); err != nil {
		t.Fatal(err)
	}
	waitDecide(t, s, 30*time.Second)
	if err := s.Ping(context.Background()); err != nil {
		t.Errorf("Ping after restart = %v", err)
	}
}

// TestStopped: a hung Redis (SIGSTOP) costs each call about its deadline
// and a timeout error; SIGCONT recovers.
func TestStopped(t *testing.T) {
	srv := testenv.StartRedis(t)
	s := open(t, Options{URL: srv.URL}) // the default 15 ms deadline
	waitDecide(t, s, 30*time.Second)
	srv.Stop()
	defer srv.Cont() // before the server's cleanup, should an assertion stop the test
	it := store.Item{Key: "k", Limit: 10, Period: sec, Hits: 1}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var took []time.Duration
	for range 8 {
		wg.Go(func() {
			for range 5 {
				start := time.Now()
				_, err := s.Decide(context.Background(), []store.Item{it})
				d := time.Since(start)
				mu.Lock()
				took = append(took, d)
				mu.Unlock()
				if err == nil {
					t.Error("Decide against a stopped Redis succeeded")
					return
				}
				if kind := ErrorKind(err); kind != "timeout" {
					t.Errorf("Decide against a stopped Redis: %v, kind %q, want timeout", err, kind)
				}
			}
		})
	}
	wg.Wait()
	// One call on a loaded machine may be descheduled: judge the median
	// with a margin, and every call against a hang (retries, back-offs).
	slices.Sort(took)
	if med, slowest := took[len(took)/2], took[len(took)-1]; med > 100*time.Millisecond || slowest > 2*time.Second {
		t.Errorf("Decide against a stopped Redis: median %v, slowest %v; want about the 15 ms deadline (median ≤ 100 ms, slowest ≤ 2 s)", med, slowest)
	}
	if err := s.Ping(context.Background()); ErrorKind(err) != "timeout" {
		t.Errorf("Ping against a stopped Redis = %v, want a timeout", err)
	}
	srv.Cont()
	waitDecide(t, s, 30*time.Second)
}

// TestOOM: at maxmemory with noeviction, a charging decision fails with kind
// "oom" and charges nothing; a check, which writes nothing, still answers.
func TestOOM(t *testing.T) {
	srv := testenv.StartRedis(t)
	s := open(t, Options{URL: srv.URL, Timeout: 5 * time.Second})
	c := raw(t, srv.URL)
	ctx := context.Background()
	it := store.Item{Key: "k", Limit: 10, Period: sec, Hits: 1}
	if _, err := s.Decide(ctx, []store.Item{it}); err != nil {
		t.Fatal(err)
	}
	if err := c.ConfigSet(ctx, "maxmemory-policy", "noeviction").Err(); err != nil {
		t.Fatal(err)
	}
	if err := c.ConfigSet(ctx, "maxmemory", "1").Err(); err != nil {
		t.Fatal(err)
	}
	_, err := s.Decide(ctx, []store.Item{it, {Key: "other", Limit: 10, Period: sec, Hits: 1}})
	t.Logf("Decide at maxmemory: %v", err)
	if kind := ErrorKind(err); kind != "oom" {
		t.Errorf("Decide at maxmemory = %v, kind %q, want oom", err, kind)
	}
	if err := s.Adjust(ctx, []store.Adjustment{{Item: it, Delta: 1}}); ErrorKind(err) != "oom" {
		t.Errorf("Adjust at maxmemory = %v, want an oom error", err)
	}
	check := store.Item{Key: "other", Limit: 10, Period: sec}
	d, err := s.Decide(ctx, []store.Item{check})
	if err != nil || d.Results[0].Remaining != 10 {
		t.Errorf("check at maxmemory = %+v, %v, want 10 remaining: nothing charged", d, err)
	}
	if err := c.ConfigSet(ctx, "maxmemory", "0").Err(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Decide(ctx, []store.Item{it}); err != nil {
		t.Errorf("Decide after lifting maxmemory: %v", err)
	}
}
