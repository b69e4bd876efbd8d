package redisstore

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"syscall"

	"github.com/redis/go-redis/v9"
)

// ErrorKind classifies an error from this package for metrics and fail
// modes, with one of a fixed set of labels:
//
//   - "timeout": the deadline passed or the caller gave up (context deadline
//     or cancellation, a network timeout, no free connection in time);
//   - "connection": Redis cannot be reached or dropped the connection
//     (refused, reset, EOF, a closed client, a server still loading, a
//     cluster that does not serve the slot yet);
//   - "oom": Redis is at maxmemory and refuses writes;
//   - "script": the script failed or answered in an unexpected shape;
//   - "other": anything else, including invalid items.
//
// It returns "" for nil.
func ErrorKind(err error) string {
	if err == nil {
		return ""
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) || errors.Is(err, redis.ErrPoolTimeout) {
		return "timeout"
	}
	var nerr net.Error
	if errors.As(err, &nerr) && nerr.Timeout() {
		return "timeout"
	}
	if errors.Is(err, errBadReply) {
		return "script"
	}
	var rerr redis.Error
	if errors.As(err, &rerr) {
		return serverErrorKind(rerr.Error())
	}
	var operr *net.OpError
	switch {
	case errors.As(err, &operr),
		errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, redis.ErrClosed),
		errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		return "connection"
	}
	return "other"
}

// ErrorKind is the package's ErrorKind as a method, so a consumer holding
// the Store behind an interface can classify its errors.
func (s *Store) ErrorKind(err error) string { return ErrorKind(err) }

// serverErrorKind classifies an error reply by its code, the first word.
func serverErrorKind(msg string) string {
	code, _, _ := strings.Cut(msg, " ")
	switch code {
	case "OOM":
		return "oom"
	case "NOSCRIPT", "BUSY":
		return "script"
	case "LOADING", "MASTERDOWN", "CLUSTERDOWN", "TRYAGAIN":
		return "connection"
	}
	if strings.Contains(msg, "script") || strings.Contains(msg, "user_script") {
		return "script"
	}
	return "other"
}
