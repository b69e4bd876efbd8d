package providersstub

import "net/http"

// stopping answers, in d's shape, a request that arrives once the stub is
// stopping (serve.Inflight refuses it).
func stopping(d dialect) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		d.write(w, apiError{status: http.StatusServiceUnavailable, message: "The stub is stopping."})
	}
}
