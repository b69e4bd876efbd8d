package ratelimit

import (
	"container/list"
	"context"
	"crypto/sha256"
	"errors"
	"net/http"
	"sync"
	"time"
)

// The consume idempotency cache's bounds, per process.
const (
	// idemBytes bounds the answers kept, in bytes (each entry counted as
	// its key, its answer and idemOverhead).
	idemBytes = 64 << 20
	// idemEntryMax is the largest answer kept whole; a larger one is kept
	// as idemTooLarge (a retry is refused, not charged again).
	idemEntryMax = 1 << 20
	// idemOverhead is what an entry is counted beyond its key and answer:
	// the map and list cells, the hash, the header maps.
	idemOverhead = 256
	idemTTL      = time.Hour
)

// errIdemFull: the cache is full of requests still being answered; the
// new key was not claimed.
var errIdemFull = errors.New("too many consumes with an idempotency key in flight")

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

// size is rp's body and headers, in bytes.
func (rp *reply) size() int {
	n := len(rp.body)
	for k, vs := range rp.header {
		for _, v := range vs {
			n += len(k) + len(v)
		}
	}
	return n
}

// idemTooLarge is what a retry is answered when the first answer was too
// large to keep: the request was answered (and charged) once already.
func idemTooLarge() *reply {
	return errorReply(apiErr(http.StatusConflict, "conflict",
		"a request with this Idempotency-Key was answered already; its answer was too large to keep"), "")
}

// idemCache remembers consume answers by (user, Idempotency-Key) for a
// TTL after they were answered, in this process only, within maxBytes:
// when a new entry does not fit, the finished answers that expire first
// go first. A request being answered is never evicted (its retry would be
// charged again): when the cache is full of them a new key is refused with
// errIdemFull. A request whose key is being answered waits for that
// answer.
type idemCache struct {
	maxBytes, maxEntry int
	ttl                time.Duration
	now                func() time.Time

	mu      sync.Mutex
	entries map[string]*idemEntry
	done    *list.List // the finished entries (*idemEntry), in expiry order
	bytes   int        // the counted size of every entry, in flight or done
}

type idemEntry struct {
	key     string
	sum     [32]byte      // the request body's hash
	ready   chan struct{} // closed once rp is set (or the attempt gave up)
	rp      *reply        // nil: the attempt kept no answer (retry it)
	size    int           // as counted in idemCache.bytes
	expires time.Time     // set when finished
	elem    *list.Element // in idemCache.done once finished
}

func newIdemCache(maxBytes, maxEntry int, ttl time.Duration, now func() time.Time) *idemCache {
	return &idemCache{maxBytes: maxBytes, maxEntry: maxEntry, ttl: ttl, now: now,
		entries: map[string]*idemEntry{}, done: list.New()}
}

// begin claims key for body. It returns the earlier answer to replay, or
// conflict when key was used with another body, or a finish function to
// call with this request's answer (nil: keep none, a retry runs again).
// A full cache is errIdemFull; ctx ending while another request with key
// is answered is ctx's error.
func (c *idemCache) begin(ctx context.Context, key string, body []byte) (prev *reply, conflict bool, finish func(*reply), err error) {
	sum := sha256.Sum256(body)
	for {
		c.mu.Lock()
		c.expire()
		e := c.entries[key]
		if e == nil {
			size := idemOverhead + len(key)
			if !c.makeRoom(size) {
				c.mu.Unlock()
				return nil, false, nil, errIdemFull
			}
			e = &idemEntry{key: key, sum: sum, ready: make(chan struct{}), size: size}
			c.entries[key] = e
			c.bytes += size
			c.mu.Unlock()
			return nil, false, func(rp *reply) { c.finish(e, rp) }, nil
		}
		c.mu.Unlock()
		if e.sum != sum {
			return nil, true, nil, nil
		}
		select {
		case <-e.ready: // an answer ready wins over ctx's end
		default:
			select {
			case <-ctx.Done():
				return nil, false, nil, ctx.Err()
			case <-e.ready:
			}
		}
		if e.rp != nil {
			return e.rp, false, nil, nil
		}
		// The first attempt kept no answer and left: try to claim the key.
	}
}

// finish ends e's attempt with rp (nil: forget the key). An answer above
// maxEntry, or one that does not fit beside the requests in flight, is
// kept as idemTooLarge.
func (c *idemCache) finish(e *idemEntry, rp *reply) {
	c.mu.Lock()
	defer c.mu.Unlock()
	defer close(e.ready)
	if rp == nil {
		delete(c.entries, e.key)
		c.bytes -= e.size
		return
	}
	extra := rp.size()
	if extra > c.maxEntry || !c.makeRoom(extra) {
		rp, extra = idemTooLarge(), 0 // counted within idemOverhead
	}
	e.rp, e.size, e.expires = rp, e.size+extra, c.now().Add(c.ttl)
	c.bytes += extra
	e.elem = c.done.PushBack(e)
}

// makeRoom evicts finished entries, the first to expire first, until n
// more bytes fit, and reports whether they do; c.mu is held.
func (c *idemCache) makeRoom(n int) bool {
	for c.bytes+n > c.maxBytes && c.done.Len() > 0 {
		c.remove(c.done.Front().Value.(*idemEntry))
	}
	return c.bytes+n <= c.maxBytes
}

// expire drops the finished entries past their TTL; c.mu is held.
func (c *idemCache) expire() {
	now := c.now()
	for f := c.done.Front(); f != nil; f = c.done.Front() {
		e := f.Value.(*idemEntry)
		if now.Before(e.expires) {
			return
		}
		c.remove(e)
	}
}

// remove drops the finished entry e; c.mu is held.
func (c *idemCache) remove(e *idemEntry) {
	c.done.Remove(e.elem)
	delete(c.entries, e.key)
	c.bytes -= e.size
}
