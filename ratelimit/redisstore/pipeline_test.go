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

// Concurrent decisions go out as pipelines of EVALSHA; after SCRIPT FLUSH
// every pipelined command that meets NOSCRIPT is sent again with EVAL, and
// the admissions stay exact.
func TestPipelinedDecisionsSurviveScriptFlush(t *testing.T) {
	srv := testenv.StartRedis(t)
	s := open(t, Options{URL: srv.URL, Timeout: 5 * time.Second})
	c := raw(t, srv.URL)
	ctx := context.Background()
	if err := c.ScriptFlush(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	var admitted, failed atomic.Int64
	var wg sync.WaitGroup
	for g := 0; g < 64; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 20; i++ {
				d, err := s.Decide(ctx, []store.Item{{Key: "hot", Limit: 500, Period: 3600 * sec, Hits: 1}})
				if err != nil {
					failed.Add(1)
					t.Errorf("Decide: %v", err)
					return
				}
				if d.Allowed {
					admitted.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	if got := admitted.Load(); got != 500 {
		t.Errorf("admitted %d of 1280, want exactly 500", got)
	}
}

// A pipeline that meets NOSCRIPT loads the script once and sends those calls again.
func TestPipelineReloadsLostScript(t *testing.T) {
	srv := testenv.StartRedis(t)
	s := open(t, Options{URL: srv.URL, Timeout: 5 * time.Second})
	c := raw(t, srv.URL)
	if err := c.ScriptFlush(context.Background()).Err(); err != nil {
		t.Fatal(err)
	}
	var batch []*call
	for _, key := range []string{"a", "b", "a"} {
		batch = append(batch, &call{
			ctx:  context.Background(),
			keys: []string{s.key(store.Item{Key: key})},
			args: []any{"", "", int(store.GCRA), 2, 3600 * sec, 1, 0},
			done: make(chan struct{}),
		})
	}
	s.pipe.send(batch)
	for i, c := range batch {
		<-c.done
		if c.err != nil {
			t.Fatalf("call %d: %v", i, c.err)
		}
	}
	if got := batch[2].vals[1+1]; got != 0 { // a's remaining after two hits of 2
		t.Errorf("remaining of a after two decisions = %d, want 0", got)
	}
}

// A call whose caller has already given up is never sent, so it charges
// nothing.
func TestAbandonedCallIsNotSent(t *testing.T) {
	s := open(t, Options{URL: testenv.RedisURL(t), Prefix: testenv.Prefix(t), Timeout: 5 * time.Second})
	gone, cancel := context.WithCancel(context.Background())
	cancel()
	it := store.Item{Key: "abandoned", Limit: 1, Period: 3600 * sec, Hits: 1}
	c := &call{ctx: gone, keys: []string{s.key(it)}, args: []any{"", "", int(store.GCRA), 1, 3600 * sec, 1, 0}, done: make(chan struct{})}
	s.pipe.send([]*call{c})
	<-c.done
	if c.err == nil {
		t.Fatal("abandoned call: no error")
	}
	d, err := s.Decide(context.Background(), []store.Item{it})
	if err != nil || !d.Allowed {
		t.Errorf("after an abandoned call the bucket admits %v (%v), want the one token still there", d.Allowed, err)
	}
}

// Close stops the workers; a decision after Close fails instead of hanging.
func TestDecideAfterClose(t *testing.T) {
	s, err := New(context.Background(), Options{URL: testenv.RedisURL(t), Prefix: testenv.Prefix(t)})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if _, err := s.Decide(ctx, []store.Item{{Key: "k", Limit: 1, Period: sec, Hits: 1}}); err == nil {
		t.Error("Decide after Close = nil error")
	}
}
