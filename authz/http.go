package authz

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/leakytokens/leaky/authz/store"
	"github.com/leakytokens/leaky/internal/serve"
)

// maxBodyBytes bounds every JSON request body of the HTTP API.
const maxBodyBytes = 64 << 10

// routes is the HTTP API; the runtime answers /livez, /readyz and /metrics
// before it.
func (s *Service) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /oauth2/jwks", s.jwks)
	mux.HandleFunc("GET /.well-known/jwks.json", s.jwks)
	s.restRoutes(mux)
	s.oauthRoutes(mux)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) { unmatched(mux, w, r) })
	return s.logRequests(validURL(mux))
}

// unmatched answers a request no route took, in place of the mux's plain
// text: 405 with Allow when the path has routes for other methods, else
// 404, both with the JSON envelope.
func unmatched(mux *http.ServeMux, w http.ResponseWriter, r *http.Request) {
	var allow []string
	for _, m := range []string{"DELETE", "GET", "HEAD", "PATCH", "POST", "PUT"} {
		if m == r.Method {
			continue
		}
		probe := r.Clone(r.Context())
		probe.Method = m
		if _, pattern := mux.Handler(probe); pattern != "" && pattern != "/" {
			allow = append(allow, m)
		}
	}
	if len(allow) > 0 {
		w.Header().Set("Allow", strings.Join(allow, ", "))
		serve.WriteJSON(w, http.StatusMethodNotAllowed, serve.ErrorBody{Error: "method_not_allowed", Message: r.Method + " is not allowed here"})
		return
	}
	serve.WriteJSON(w, http.StatusNotFound, serve.ErrorBody{Error: "not_found", Message: "no such endpoint"})
}

func (s *Service) jwks(w http.ResponseWriter, _ *http.Request) {
	set := s.ring.Set()
	w.Header().Set("Content-Type", "application/jwk-set+json")
	w.Header().Set("Cache-Control", "public, max-age=60")
	_, _ = w.Write(set.JWKS())
}

// statusWriter records the status code for the request log and metrics.
type statusWriter struct {
	http.ResponseWriter
	code int
}

func (w *statusWriter) WriteHeader(code int) {
	w.code = code
	w.ResponseWriter.WriteHeader(code)
}

// logRequests logs method, route pattern, status and duration. It never
// logs the query, headers or body, where credentials travel.
func (s *Service) logRequests(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w, code: http.StatusOK}
		next.ServeHTTP(sw, r)
		route := r.Pattern
		if route == "" || route == "/" {
			route = "unmatched"
		}
		s.metrics.httpRequests.WithLabelValues(route, strconv.Itoa(sw.code)).Inc()
		s.logger.LogAttrs(r.Context(), slog.LevelInfo, "http request",
			slog.String(serve.KeyMethod, r.Method), slog.String(serve.KeyRoute, route),
			slog.Int(serve.KeyStatus, sw.code), slog.Duration(serve.KeyDuration, time.Since(start)))
	})
}

// apiError is an HTTP API failure with its status and stable code.
type apiError struct {
	status  int
	code    string
	message string
}

func (e *apiError) Error() string { return e.code + ": " + e.message }

func badRequest(msg string) *apiError {
	return &apiError{http.StatusBadRequest, "invalid_request", msg}
}
func notFound(what string) *apiError {
	return &apiError{http.StatusNotFound, "not_found", what + " not found"}
}
func forbiddenErr(msg string) *apiError {
	return &apiError{http.StatusForbidden, "forbidden", msg}
}

// writeError is the one place an HTTP API error becomes a wire answer: the
// JSON envelope {"error": code, "message": …}. A value the store refuses
// (store.ErrInvalid) is 400. A store that is unreachable or missed the
// deadline (store.ErrUnavailable, context.DeadlineExceeded) is 503 with
// Retry-After, logged as a warning; so is no free argon2 slot before the
// deadline (errHasherBusy), unlogged. Other unexpected errors are logged
// (they never carry secrets) and answered 500 without detail.
func (s *Service) writeError(w http.ResponseWriter, r *http.Request, err error) {
	var ae *apiError
	switch {
	case errors.As(err, &ae):
	case errors.Is(err, errHasherBusy):
		ae = &apiError{http.StatusServiceUnavailable, "unavailable", "too many password checks in progress, retry later"}
		w.Header().Set("Retry-After", "1")
	case errors.Is(err, store.ErrInvalid):
		ae = badRequest("a value is not acceptable text")
	case storeUnavailable(err):
		s.logger.LogAttrs(r.Context(), slog.LevelWarn, "http handler: store unavailable",
			slog.String(serve.KeyRoute, r.Pattern), slog.String(serve.KeyError, err.Error()))
		ae = &apiError{http.StatusServiceUnavailable, "unavailable", "store unavailable, retry later"}
		w.Header().Set("Retry-After", "1")
	default:
		s.logger.LogAttrs(r.Context(), slog.LevelError, "http handler failed",
			slog.String(serve.KeyRoute, r.Pattern), slog.String(serve.KeyError, err.Error()))
		ae = &apiError{http.StatusInternalServerError, "internal", "internal error"}
	}
	if ae.status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer realm="leaky-tokens"`)
	}
	serve.WriteJSON(w, ae.status, serve.ErrorBody{Error: ae.code, Message: ae.message})
}

// storeUnavailable reports whether err says the store did not answer, in
// time or at all, rather than that a request was wrong.
func storeUnavailable(err error) bool {
	return errors.Is(err, store.ErrUnavailable) || errors.Is(err, context.DeadlineExceeded)
}
