package redisstore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/leakytokens/leaky/ratelimit/store"
)

// serverError is an error reply as go-redis reports it.
type serverError string

func (e serverError) Error() string { return string(e) }
func (serverError) RedisError()     {}

// netTimeout is a network error that timed out.
type netTimeout struct{}

func (netTimeout) Error() string   { return "i/o timeout" }
func (netTimeout) Timeout() bool   { return true }
func (netTimeout) Temporary() bool { return true }

func TestErrorKind(t *testing.T) {
	wrap := func(err error) error { return fmt.Errorf("redis decide: %w", err) }
	tests := []struct {
		name string
		err  error
		want string
	}{
		{"nil", nil, ""},
		{"deadline", wrap(context.DeadlineExceeded), "timeout"},
		{"canceled", wrap(context.Canceled), "timeout"},
		{"pool timeout", wrap(redis.ErrPoolTimeout), "timeout"},
		{"read timeout", wrap(&net.OpError{Op: "read", Net: "tcp", Err: netTimeout{}}), "timeout"},
		{"refused", wrap(&net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}), "connection"},
		{"reset", wrap(syscall.ECONNRESET), "connection"},
		{"eof", wrap(io.EOF), "connection"},
		{"closed client", wrap(redis.ErrClosed), "connection"},
		{"loading", wrap(serverError("LOADING Redis is loading the dataset in memory")), "connection"},
		{"cluster down", wrap(serverError("CLUSTERDOWN The cluster is down")), "connection"},
		{"oom", wrap(serverError("OOM command not allowed when used memory > 'maxmemory'. script: 7a9d, on @user_script:76.")), "oom"},
		{"noscript", wrap(redis.ErrNoScript), "script"},
		{"busy", wrap(serverError("BUSY Redis is busy running a script. You can only call SCRIPT KILL or SHUTDOWN NOSCRIPT.")), "script"},
		{"script runtime", wrap(serverError("ERR user_script:12: attempt to compare nil with number script: 7a9d, on @user_script:12.")), "script"},
		{"bad reply", wrap(fmt.Errorf("%w: 3 values for 1 items", errBadReply)), "script"},
		{"wrong type", wrap(serverError("WRONGTYPE Operation against a key holding the wrong kind of value")), "other"},
		{"invalid item", fmt.Errorf("item 0: %w: empty key", store.ErrInvalidItem), "other"},
		{"plain", errors.New("boom"), "other"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := ErrorKind(tc.err); got != tc.want {
				t.Errorf("ErrorKind(%v) = %q, want %q", tc.err, got, tc.want)
			}
		})
	}
}
