package serve

import "net/http"

// headerReserve multiplies Config.HTTPMaxHeaderBytes into the bound given
// to net/http, which answers a header block over its bound itself, in
// plain text, before any handler runs. Between the configured bound and
// that one, limitHeaders answers instead, with the JSON error; only a
// header block larger than headerReserve times the bound still gets
// net/http's plain-text 431.
const headerReserve = 4

// limitHeaders answers 431 with the JSON error envelope, and closes the
// connection, when r's request line and headers exceed limit bytes, counted
// as on the wire ("Name: value\r\n" per value).
func limitHeaders(limit int, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := len(r.Method) + len(r.RequestURI) + len(r.Proto) + len("  \r\n") + len("Host: \r\n") + len(r.Host)
		for k, vs := range r.Header {
			for _, v := range vs {
				n += len(k) + len(v) + len(": \r\n")
			}
		}
		if n > limit {
			w.Header().Set("Connection", "close")
			WriteJSON(w, http.StatusRequestHeaderFieldsTooLarge, ErrorBody{Error: "header_too_large",
				Message: "the request's headers are too large"})
			return
		}
		next.ServeHTTP(w, r)
	})
}
