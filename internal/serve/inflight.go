package serve

import (
	"net/http"
	"sync"
)

// Inflight counts the HTTP handlers running, so that a stop can wait for
// the last one: http.Server.Close cuts connections but does not wait for
// their handlers. Once closed it admits no handler, so nothing a service
// tears down after Run (its store) is used by a request that slipped in
// between Close and the wait. Build one with NewInflight; it is safe for
// concurrent use. The runtime tracks its own handlers with one; a server
// of its own (the provider stubs) can use another.
type Inflight struct {
	mu     sync.Mutex
	idle   *sync.Cond // signalled when n drops to 0; L is &mu
	n      int
	closed bool
}

// NewInflight returns an open Inflight with no handler running.
func NewInflight() *Inflight {
	f := &Inflight{}
	f.idle = sync.NewCond(&f.mu)
	return f
}

// enter admits a handler, or reports false once closed.
func (f *Inflight) enter() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return false
	}
	f.n++
	return true
}

// exit ends a handler admitted by enter.
func (f *Inflight) exit() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.n--; f.n == 0 {
		f.idle.Broadcast()
	}
}

// CloseAndWait admits no more handlers and waits for the running ones.
func (f *Inflight) CloseAndWait() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closed = true
	for f.n > 0 {
		f.idle.Wait()
	}
}

// Track runs next inside f; a request arriving after CloseAndWait began
// does not reach next: refused answers it (nil: a JSON 503 "the server is
// stopping").
func (f *Inflight) Track(next http.Handler, refused http.HandlerFunc) http.Handler {
	if refused == nil {
		refused = func(w http.ResponseWriter, _ *http.Request) {
			WriteJSON(w, http.StatusServiceUnavailable, ErrorBody{Error: "unavailable", Message: "the server is stopping"})
		}
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !f.enter() {
			refused(w, r)
			return
		}
		defer f.exit()
		next.ServeHTTP(w, r)
	})
}

// Running is how many handlers are running now.
func (f *Inflight) Running() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.n
}
