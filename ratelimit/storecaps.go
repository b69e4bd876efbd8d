package ratelimit

import (
	"context"
	"errors"
	"io"

	"github.com/leakytokens/leaky/ratelimit/store"
)

// The service takes its bucket store as a store.Store and never opens one:
// cmd/leaky chooses the adapter (the memory store, ratelimit/redisstore, …)
// and hands it to New. Beyond deciding, a store may offer any of the
// capabilities below; the service finds them by type assertion, and a store
// without one gets the behaviour its comment names.

// pinger answers readiness probes (/readyz, gRPC health). Without it the
// store is always ready.
type pinger interface {
	Ping(ctx context.Context) error
}

// errorClassifier names the kind of a failed call for the err_type label of
// ratelimit_service_should_rate_limit_error, from a small fixed set. Without
// it: "timeout" for a context error, else "other".
type errorClassifier interface {
	ErrorKind(err error) string
}

// runner is background upkeep (the memory store's sweep of idle buckets),
// run by Service.Run until its context ends.
type runner interface {
	Run(ctx context.Context) error
}

// evictionCounter counts live buckets dropped to stay within a bound, for
// ratelimit_service_memory_evictions_total. Without it the series stays 0.
type evictionCounter interface {
	Evictions() uint64
}

func (s *Service) evictions() float64 {
	if ec, ok := s.store.(evictionCounter); ok {
		return float64(ec.Evictions())
	}
	return 0
}

func (s *Service) ping(ctx context.Context) error {
	if p, ok := s.store.(pinger); ok {
		return p.Ping(ctx)
	}
	return nil
}

func (s *Service) errorKind(err error) string {
	if c, ok := s.store.(errorClassifier); ok {
		return c.ErrorKind(err)
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return "timeout"
	}
	return "other"
}

// closeStore releases st when it holds anything (an io.Closer: connections,
// workers). The service owns the store it was given.
func closeStore(st store.Store) {
	if c, ok := st.(io.Closer); ok {
		c.Close()
	}
}
