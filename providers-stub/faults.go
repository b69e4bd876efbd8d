package providersstub

import (
	"crypto/sha256"
	"math/rand/v2"
	"net/http"
	"sync"
)

// faults decides which requests the knobs fail. It is safe for concurrent
// use.
type faults struct {
	mu       sync.Mutex
	rng      *rand.Rand // draws for ErrorRate, seeded: a run's sequence of draws is reproducible
	attempts *attempts
}

func newFaults(seed uint64, memory int) *faults {
	return &faults{rng: rand.New(rand.NewPCG(seed, seed^0x5eed)), attempts: newAttempts(memory)}
}

// status returns the status a request with knobs k must be answered with
// instead of its answer, or 0: Status if set, else 503 for one of the
// first FailFirst attempts, else 500 at ErrorRate. key names the request
// (every attempt of one request has the same key); it is called only when
// FailFirst is set.
func (f *faults) status(k Knobs, key func() [sha256.Size]byte) int {
	if k.Status != 0 {
		return k.Status
	}
	if k.FailFirst > 0 && f.attempt(key()) <= k.FailFirst {
		return http.StatusServiceUnavailable
	}
	if k.ErrorRate > 0 && f.draw() < k.ErrorRate {
		return http.StatusInternalServerError
	}
	return 0
}

func (f *faults) attempt(key [sha256.Size]byte) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.attempts.record(key)
}

func (f *faults) draw() float64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.rng.Float64()
}

// attemptKey names a request's attempts: a hash of its provider and
// x-request-id, or, without one, of its provider, method, path and body
// (what a retry resends unchanged). A hash, so that the memory of attempts
// is bounded whatever the ids' length.
func attemptKey(provider string, r *http.Request, body []byte) [sha256.Size]byte {
	h := sha256.New()
	if id := r.Header.Get("x-request-id"); id != "" {
		h.Write([]byte(provider + "\x00id\x00" + id))
	} else {
		h.Write([]byte(provider + "\x00" + r.Method + "\x00" + r.URL.Path + "\x00"))
		h.Write(body)
	}
	return [sha256.Size]byte(h.Sum(nil))
}

// attempts counts the attempts of the last requests seen, at most max of
// them: when full, the request seen first is forgotten (its next attempt
// counts as its first). Not safe for concurrent use.
type attempts struct {
	counts map[[sha256.Size]byte]int
	order  [][sha256.Size]byte // ring of the keys in counts
	oldest int                 // index in order of the key seen first
}

func newAttempts(max int) *attempts {
	return &attempts{counts: make(map[[sha256.Size]byte]int, max), order: make([][sha256.Size]byte, 0, max)}
}

// record records an attempt of key and returns its number, 1 for the first.
func (a *attempts) record(key [sha256.Size]byte) int {
	if n, ok := a.counts[key]; ok {
		a.counts[key] = n + 1
		return n + 1
	}
	if len(a.order) < cap(a.order) {
		a.order = append(a.order, key)
	} else {
		delete(a.counts, a.order[a.oldest])
		a.order[a.oldest] = key
		a.oldest = (a.oldest + 1) % len(a.order)
	}
	a.counts[key] = 1
	return 1
}
