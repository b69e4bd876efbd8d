package ratelimit

import (
	"context"
	"crypto/sha256"
	"net/http"
	"sync"
	"time"
)

// The consume idempotency cache's bounds: answers kept per process, and
// for how long.
const (
	idemEntries = 10000
	idemTTL     = time.Hour
)

// reply is a finished answer: what a retried request is answered again.
type reply struct {
	status int
	header http.Header
	body   []byte
}

func (rp *reply) write(w http.ResponseWriter) {
	for k, v := range rp.header {
		w.Header()[k] = v
	}
	w.WriteHeader(rp.status)
	_, _ = w.Write(rp.body)
}

// idemCache remembers consume answers by (user, Idempotency-Key) for a
// TTL, at most max of them (the oldest goes first), in this process only.
// A request whose key is being answered waits for that answer.
type idemCache struct {
	max int
	ttl time.Duration
	now func() time.Time

	mu      sync.Mutex
	entries map[string]*idemEntry
	order   []string // keys, oldest first
}

type idemEntry struct {
	sum     [32]byte      // the request body's hash
	done    chan struct{} // closed once rp is set (or the attempt gave up)
	rp      *reply        // nil: the attempt kept no answer (retry it)
	expires time.Time
}

func newIdemCache(max int, ttl time.Duration, now func() time.Time) *idemCache {
	return &idemCache{max: max, ttl: ttl, now: now, entries: map[string]*idemEntry{}}
}

// begin claims key for body. It returns the earlier answer to replay, or
// conflict when key was used with another body, or a finish function to
// call with this request's answer (nil: keep none, a retry runs again).
func (c *idemCache) begin(ctx context.Context, key string, body []byte) (prev *reply, conflict bool, finish func(*reply), err error) {
	sum := sha256.Sum256(body)
	for {
		c.mu.Lock()
		c.expire()
		e := c.entries[key]
		if e == nil {
			e = &idemEntry{sum: sum, done: make(chan struct{}), expires: c.now().Add(c.ttl)}
			c.entries[key] = e
			c.order = append(c.order, key)
			c.mu.Unlock()
			return nil, false, func(rp *reply) { c.finish(key, e, rp) }, nil
		}
		c.mu.Unlock()
		if e.sum != sum {
			return nil, true, nil, nil
		}
		select {
		case <-ctx.Done():
			return nil, false, nil, ctx.Err()
		case <-e.done:
		}
		if e.rp != nil {
			return e.rp, false, nil, nil
		}
		// The first attempt kept no answer and left: try to claim the key.
	}
}

func (c *idemCache) finish(key string, e *idemEntry, rp *reply) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e.rp = rp
	close(e.done)
	if rp == nil && c.entries[key] == e {
		delete(c.entries, key)
	}
}

// expire drops entries past their TTL, and the oldest beyond max; c.mu
// is held. Entries are in expiry order (one TTL for all).
func (c *idemCache) expire() {
	now := c.now()
	n := 0
	for n < len(c.order) {
		e := c.entries[c.order[n]]
		full := len(c.order)-n >= c.max
		if e != nil && !full && now.Before(e.expires) {
			break
		}
		if e != nil && (full || !now.Before(e.expires)) {
			delete(c.entries, c.order[n])
		}
		n++
	}
	c.order = c.order[n:]
}
