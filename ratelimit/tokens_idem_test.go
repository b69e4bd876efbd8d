package ratelimit

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

// answerOf is a 200 reply whose body is n bytes.
func answerOf(n int) *reply {
	return &reply{status: http.StatusOK, header: http.Header{}, body: []byte(strings.Repeat("x", n))}
}

// claim begins key (body "b") and fails unless it is a new claim.
func claim(t *testing.T, c *idemCache, key string) func(*reply) {
	t.Helper()
	prev, conflict, finish, err := c.begin(context.Background(), key, []byte("b"))
	if err != nil || conflict || prev != nil {
		t.Fatalf("begin %s: prev %v, conflict %v, err %v; want a new claim", key, prev, conflict, err)
	}
	return finish
}

// replayed reports whether key (body "b") is answered a kept answer, and
// which; a key being answered counts as kept (the wait is cut short).
func replayed(t *testing.T, c *idemCache, key string) (*reply, bool) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	prev, _, finish, err := c.begin(ctx, key, []byte("b"))
	switch {
	case finish != nil:
		finish(nil) // give the claim back
		return nil, false
	case errors.Is(err, context.Canceled):
		return nil, true
	case err != nil:
		t.Fatalf("begin %s: %v", key, err)
	}
	return prev, true
}

// The cache is bounded by bytes: answers beyond the bound evict the
// oldest answers, never more than the bound is kept.
func TestIdemCacheBoundedByBytes(t *testing.T) {
	c := newIdemCache(40<<10, 16<<10, time.Hour, time.Now)
	for i := range 20 {
		claim(t, c, "k"+strconv.Itoa(i))(answerOf(8 << 10))
		if c.bytes > c.maxBytes {
			t.Fatalf("after %d answers: %d bytes kept, bound %d", i+1, c.bytes, c.maxBytes)
		}
	}
	if _, ok := replayed(t, c, "k0"); ok {
		t.Fatal("the oldest answer is still kept")
	}
	if rp, ok := replayed(t, c, "k19"); !ok || len(rp.body) != 8<<10 {
		t.Fatalf("the newest answer: %v, %v; want it replayed", rp, ok)
	}
}

// A request being answered is never evicted (its retry would be charged
// again): a cache full of them refuses a new key, and takes one again once
// an answer can be evicted.
func TestIdemCacheKeepsInFlight(t *testing.T) {
	c := newIdemCache(4*(idemOverhead+2), 1<<10, time.Hour, time.Now)
	var finishes []func(*reply)
	for i := range 4 {
		finishes = append(finishes, claim(t, c, "k"+strconv.Itoa(i)))
	}
	if _, _, _, err := c.begin(context.Background(), "k4", []byte("b")); !errors.Is(err, errIdemFull) {
		t.Fatalf("a fifth key: %v, want errIdemFull", err)
	}
	for i := range 4 {
		if _, ok := replayed(t, c, "k"+strconv.Itoa(i)); !ok {
			t.Fatalf("k%d, in flight, was evicted", i)
		}
	}
	finishes[0](answerOf(10)) // does not fit beside the others: kept as too large
	if rp, ok := replayed(t, c, "k0"); !ok || rp.status != http.StatusConflict {
		t.Fatalf("k0's retry: %v, %v; want the 409 of an answer too large to keep", rp, ok)
	}
	claim(t, c, "k4") // evicts k0's answer, the only finished one
	for i := 1; i < 4; i++ {
		if _, ok := replayed(t, c, "k"+strconv.Itoa(i)); !ok {
			t.Fatalf("k%d, in flight, was evicted", i)
		}
	}
}

// An answer above the per-entry bound is not kept, but its key is: a
// retry is refused with 409 rather than charged again.
func TestIdemCacheTooLarge(t *testing.T) {
	c := newIdemCache(1<<20, 1<<10, time.Hour, time.Now)
	claim(t, c, "big")(answerOf(2 << 10))
	rp, ok := replayed(t, c, "big")
	if !ok || rp.status != http.StatusConflict || !strings.Contains(string(rp.body), "too large") {
		t.Fatalf("retry: %v %v", rp, ok)
	}
	if c.bytes > idemOverhead+len("big") {
		t.Fatalf("%d bytes kept for a refused answer", c.bytes)
	}
}

// A key whose attempt kept no answer (finish(nil)) or whose answer expired
// leaves nothing behind.
func TestIdemCacheForgets(t *testing.T) {
	now := time.Unix(0, 0)
	c := newIdemCache(1<<20, 1<<10, time.Hour, func() time.Time { return now })
	for i := range 1000 {
		claim(t, c, "k"+strconv.Itoa(i))(nil)
	}
	claim(t, c, "kept")(answerOf(10))
	now = now.Add(time.Hour)
	claim(t, c, "late")(nil)
	if len(c.entries) != 0 || c.done.Len() != 0 || c.bytes != 0 {
		t.Fatalf("%d entries, %d finished, %d bytes left; want none", len(c.entries), c.done.Len(), c.bytes)
	}
}
