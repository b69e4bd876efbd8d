package serve

import (
	"net/http"
	"sync"
)

// inflight counts the HTTP handlers running, so that a stop can wait for
// the last one: http.Server.Close cuts connections but does not wait for
// their handlers. Once closed it admits no handler, so nothing a service
// tears down after Run (its store) is used by a request that slipped in
// between Close and the wait. Build one with newInflight; it is safe for
// concurrent use.
type inflight struct {
	mu     sync.Mutex
	idle   *sync.Cond // signalled when n drops to 0; L is &mu
	n      int
	closed bool
}

func newInflight() *inflight {
	f := &inflight{}
	f.idle = sync.NewCond(&f.mu)
	return f
}

// enter admits a handler, or reports false once closed.
func (f *inflight) enter() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return false
	}
	f.n++
	return true
}

// exit ends a handler admitted by enter.
func (f *inflight) exit() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.n--; f.n == 0 {
		f.idle.Broadcast()
	}
}

// closeAndWait admits no more handlers and waits for the running ones.
func (f *inflight) closeAndWait() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closed = true
	for f.n > 0 {
		f.idle.Wait()
	}
}

// track runs next inside f; a request arriving after closeAndWait began
// is answered 503 without reaching next.
func (f *inflight) track(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !f.enter() {
			WriteJSON(w, http.StatusServiceUnavailable, ErrorBody{Error: "unavailable", Message: "the server is stopping"})
			return
		}
		defer f.exit()
		next.ServeHTTP(w, r)
	})
}
