package store

import "time"

// onceSet remembers Once keys, each until a time, in the order they came,
// at most maxOnceKeys of them (beyond it the oldest are forgotten early).
// A Memory keeps two: one for keys kept OnceTTL (credits, seeds) and one
// for short-lived keys (a settlement's, kept Adjustment.OnceTTL), so a
// stream of settlements never pushes a credit's key out early.
type onceSet struct {
	until map[string]int64 // key → when it is forgotten (µs)
	fifo  []string
}

func newOnceSet() *onceSet { return &onceSet{until: map[string]int64{}} }

// applied reports whether key is remembered at now.
func (o *onceSet) applied(key string, now int64) bool {
	until, ok := o.until[key]
	return ok && until > now
}

// add remembers key until now + ttl.
func (o *onceSet) add(key string, now int64, ttl time.Duration) {
	if len(o.fifo) >= maxOnceKeys {
		delete(o.until, o.fifo[0])
		o.fifo = o.fifo[1:]
	}
	o.until[key] = now + ttl.Microseconds()
	o.fifo = append(o.fifo, key)
}

// prune forgets the oldest keys whose time is over.
func (o *onceSet) prune(now int64) {
	for len(o.fifo) > 0 && o.until[o.fifo[0]] <= now {
		delete(o.until, o.fifo[0])
		o.fifo = o.fifo[1:]
	}
}
