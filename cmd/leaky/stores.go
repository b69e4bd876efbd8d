package main

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/leakytokens/leaky/authz"
	"github.com/leakytokens/leaky/authz/pgstore"
	azstore "github.com/leakytokens/leaky/authz/store"
	"github.com/leakytokens/leaky/ratelimit"
	"github.com/leakytokens/leaky/ratelimit/redisstore"
	rlstore "github.com/leakytokens/leaky/ratelimit/store"
)

// Adapters are chosen here and only here: the service packages declare the
// store they need and never import Redis or PostgreSQL code
// (TestServicesImportNoAdapter keeps it so).

// openTimeout bounds opening the authz database and applying its
// migrations before the service starts.
const openTimeout = 30 * time.Second

// newRatelimit validates cfg and its configuration files, then opens the
// bucket store it names and builds the service on it. The service owns the
// store from then on.
func newRatelimit(ctx context.Context, cfg ratelimit.Config, logger *slog.Logger) (*ratelimit.Service, error) {
	if err := ratelimit.CheckConfig(cfg); err != nil {
		return nil, err
	}
	st, err := openRatelimitStore(ctx, cfg)
	if err != nil {
		return nil, err
	}
	return ratelimit.New(cfg, logger, st)
}

// startRatelimit builds the service as newRatelimit does and opens its
// durable record (openRecord), handed to the service. Run it with
// rec.run(ctx, svc); one that will not run needs svc.Close and rec.close.
func startRatelimit(ctx context.Context, cfg ratelimit.Config, logger *slog.Logger) (*ratelimit.Service, *record, error) {
	svc, err := newRatelimit(ctx, cfg, logger)
	if err != nil {
		return nil, nil, err
	}
	rec, err := openRecord(ctx, cfg, svc, logger)
	if err != nil {
		svc.Close()
		return nil, nil, err
	}
	svc.SetLedger(rec.ledger)
	return svc, rec, nil
}

// openRatelimitStore returns Redis for -store redis (one Redis, or a Redis
// Cluster for a redis+cluster:// or rediss+cluster:// -redis-url), else the
// memory store.
func openRatelimitStore(ctx context.Context, cfg ratelimit.Config) (rlstore.Store, error) {
	if cfg.Store != "redis" {
		return rlstore.NewMemory(rlstore.MemoryOptions{MaxKeys: cfg.MemoryMaxKeys}), nil
	}
	rs, err := redisstore.New(ctx, redisstore.Options{
		URL: cfg.RedisURL, Prefix: cfg.RedisPrefix, Timeout: cfg.RedisTimeout, PoolSize: cfg.RedisPoolSize,
	})
	if err != nil {
		return nil, fmt.Errorf("redis store: %w", err)
	}
	return rs, nil
}

// newAuthz validates cfg and its policy, then opens the store it names
// (PostgreSQL with the migrations applied, or memory) and builds the
// service on it. The service owns the store from then on.
func newAuthz(ctx context.Context, cfg authz.Config, logger *slog.Logger) (*authz.Service, error) {
	if err := authz.CheckConfig(cfg); err != nil {
		return nil, err
	}
	octx, cancel := context.WithTimeout(ctx, openTimeout)
	defer cancel()
	st, err := openAuthzStore(octx, cfg.DatabaseURL)
	if err != nil {
		return nil, err
	}
	return authz.New(ctx, cfg, logger, st)
}

// openAuthzStore returns the memory store for an empty url, else PostgreSQL
// with the embedded migrations applied.
func openAuthzStore(ctx context.Context, url string) (azstore.Store, error) {
	if url == "" {
		return azstore.NewMemory(), nil
	}
	s, err := pgstore.OpenMigrated(ctx, url)
	if err != nil {
		return nil, err // not a nil *pgstore.Store in a non-nil interface
	}
	return s, nil
}
