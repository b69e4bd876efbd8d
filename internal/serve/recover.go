package serve

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"runtime/debug"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// A panic in a handler is a bug. grpc-go and a dead connection would end the
// process or drop the caller's connection; these turn it into an INTERNAL
// answer (gRPC) or a JSON 500 (HTTP) for that call alone, and log it with
// the method and the stack.

func (s *Server) logPanic(ctx context.Context, method string, r any) {
	s.log.LogAttrs(ctx, slog.LevelError, "handler panicked",
		slog.String(KeyMethod, method), slog.String(KeyPanic, fmt.Sprint(r)), slog.String(KeyStack, string(debug.Stack())))
}

func (s *Server) recoverUnary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (resp any, err error) {
	defer func() {
		if r := recover(); r != nil {
			s.logPanic(ctx, info.FullMethod, r)
			resp, err = nil, status.Error(codes.Internal, "internal error")
		}
	}()
	return handler(ctx, req)
}

func (s *Server) recoverStream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) (err error) {
	defer func() {
		if r := recover(); r != nil {
			s.logPanic(ss.Context(), info.FullMethod, r)
			err = status.Error(codes.Internal, "internal error")
		}
	}()
	return handler(srv, ss)
}

// recoverHTTP answers a request whose handler panicked with a JSON 500
// {"error":"internal","message":…} when nothing was written yet (else the
// answer is cut short). http.ErrAbortHandler, the deliberate abort, passes.
func (s *Server) recoverHTTP(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rw := &wroteWriter{ResponseWriter: w}
		defer func() {
			v := recover()
			if v == nil {
				return
			}
			if err, ok := v.(error); ok && errors.Is(err, http.ErrAbortHandler) {
				panic(v)
			}
			s.logPanic(r.Context(), r.Method+" "+r.URL.Path, v)
			if !rw.wrote {
				WriteJSON(w, http.StatusInternalServerError, ErrorBody{Error: "internal", Message: "internal error"})
			}
		}()
		next.ServeHTTP(rw, r)
	})
}

// wroteWriter records whether the answer has begun.
type wroteWriter struct {
	http.ResponseWriter
	wrote bool
}

func (w *wroteWriter) WriteHeader(code int) {
	w.wrote = true
	w.ResponseWriter.WriteHeader(code)
}

func (w *wroteWriter) Write(b []byte) (int, error) {
	w.wrote = true
	return w.ResponseWriter.Write(b)
}

// Flush sends what was written so far (streamed answers).
func (w *wroteWriter) Flush() {
	w.wrote = true
	_ = http.NewResponseController(w.ResponseWriter).Flush()
}

// Unwrap lets http.ResponseController reach the connection's writer.
func (w *wroteWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// ErrorBody is the JSON error envelope of every HTTP answer the runtime
// makes: {"error": code, "message": text}.
type ErrorBody struct {
	Error   string `json:"error"`
	Message string `json:"message"`
}

// WriteJSON writes v as a JSON answer with code, uncached.
func WriteJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}
