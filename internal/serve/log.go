package serve

import (
	"sync"
	"time"
)

// Log keys every service uses for the same thing, so that one query finds a
// field in every service's lines.
const (
	KeyError    = "error"     // an error's text (never a secret: errors carry none)
	KeyService  = "service"   // the service a line comes from: ratelimit, authz
	KeyGRPCAddr = "grpc_addr" // a bound gRPC address
	KeyHTTPAddr = "http_addr" // a bound HTTP address
	KeyMethod   = "method"    // a gRPC full method name or an HTTP method
	KeyPath     = "path"      // a file path, or an HTTP request's path
	KeyRoute    = "route"     // the HTTP route pattern a request matched
	KeyStatus   = "status"    // an HTTP status code
	KeyStore    = "store"     // a store kind: memory, redis, postgres
	KeyKind     = "kind"      // the class of an error (timeout, connection, ...)
	KeyProbe    = "probe"     // a readiness probe's name
	KeyPanic    = "panic"     // the value a handler panicked with
	KeySkipped  = "skipped"   // how many lines a Throttle held back since the last
	KeyDuration = "duration"  // how long something took
	KeyCount    = "count"     // how many things an operation touched (rows purged, ...)
	KeyUsername = "username"  // a user's login name (never with a password)
	KeyUserID   = "user_id"   // a user's id
	KeyStack    = "stack"     // a goroutine's stack trace, after a panic
)

// Throttle lets a recurring event through at most once per interval, for
// logging an error that repeats on every call (a store outage) without a
// line per call. It counts what it holds back. The zero value is not
// usable; build one with NewThrottle. It is safe for concurrent use.
type Throttle struct {
	every time.Duration

	mu      sync.Mutex
	last    time.Time // when the last event was let through; zero: never
	skipped int64
}

// NewThrottle returns a Throttle letting one event through per every.
func NewThrottle(every time.Duration) *Throttle { return &Throttle{every: every} }

// Allow reports whether the event at now may be logged, and if so how many
// events were held back since the last one let through.
func (t *Throttle) Allow(now time.Time) (ok bool, skipped int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.last.IsZero() && now.Sub(t.last) < t.every {
		t.skipped++
		return false, 0
	}
	t.last, skipped, t.skipped = now, t.skipped, 0
	return true, skipped
}
