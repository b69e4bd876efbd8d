package main

import (
	"context"

	"github.com/leakytokens/leaky/controlplane/model"
	"github.com/leakytokens/leaky/internal/serve"
	"github.com/leakytokens/leaky/ratelimit"
)

// runRatelimit runs the rate-limit service until ctx ends. The ledger's
// database and the Kafka brokers come from their flags, LEAKY_* or, failing
// both, DATABASE_URL and KAFKA_BROKERS.
func runRatelimit(ctx context.Context, e env, args []string) error {
	cfg := ratelimit.DefaultConfig()
	fs := newFlagSet(e, "ratelimit", "ratelimit [flags]")
	cfg.RegisterFlags(fs)
	var consulAddr string
	consulAddrFlag(fs, &consulAddr)
	if err := parseFlags(e, fs, args); err != nil {
		return err
	}
	tuneGC(e)
	if cfg.DatabaseURL == "" {
		cfg.DatabaseURL = e.getenv("DATABASE_URL")
	}
	if cfg.KafkaBrokers == "" {
		cfg.KafkaBrokers = e.getenv("KAFKA_BROKERS")
	}
	logger := e.logger.With(serve.KeyService, "ratelimit")
	svc, rec, err := startRatelimit(ctx, cfg, logger)
	if err != nil {
		return err
	}
	deregister, err := registerInstances(ctx, logger, consulAddrOf(e, consulAddr),
		serviceInstances(model.ServiceRatelimitGRPC, svc.GRPCAddr(), model.ServiceRatelimitHTTP, svc.HTTPAddr()))
	if err != nil {
		svc.Close()
		rec.close()
		return err
	}
	defer deregister()
	return rec.run(ctx, svc)
}
