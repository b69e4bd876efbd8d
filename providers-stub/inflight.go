package providersstub

import (
	"net/http"
	"sync"
)

// inflight counts the handlers running, so that a stop can wait for the
// last one (http.Server.Close does not). Once closed it admits no handler.
// Build one with newInflight; it is safe for concurrent use.
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

// track runs next inside f; a request arriving once f is closed is
// answered 503 in d's shape without reaching next.
func (f *inflight) track(next http.Handler, d dialect) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		if f.closed {
			f.mu.Unlock()
			d.write(w, apiError{status: http.StatusServiceUnavailable, message: "The stub is stopping."})
			return
		}
		f.n++
		f.mu.Unlock()
		defer func() {
			f.mu.Lock()
			if f.n--; f.n == 0 {
				f.idle.Broadcast()
			}
			f.mu.Unlock()
		}()
		next.ServeHTTP(w, r)
	})
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
