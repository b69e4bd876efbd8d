package main

import (
	"context"

	"github.com/leakytokens/leaky/controlplane/model"
	"github.com/leakytokens/leaky/internal/serve"
	"github.com/leakytokens/leaky/ratelimit"
)

// runRatelimit runs the rate-limit service until ctx ends.
func runRatelimit(ctx context.Context, e env, args []string) error {
	cfg := ratelimit.DefaultConfig()
	fs := newFlagSet(e, "ratelimit", "ratelimit [flags]")
	cfg.RegisterFlags(fs)
	var consulAddr string
	consulAddrFlag(fs, &consulAddr)
	if err := parseFlags(e, fs, args); err != nil {
		return err
	}
	logger := e.logger.With(serve.KeyService, "ratelimit")
	svc, err := newRatelimit(ctx, cfg, logger)
	if err != nil {
		return err
	}
	deregister, err := registerInstances(ctx, logger, consulAddrOf(e, consulAddr),
		serviceInstances(model.ServiceRatelimitGRPC, svc.GRPCAddr(), model.ServiceRatelimitHTTP, svc.HTTPAddr()))
	if err != nil {
		svc.Close()
		return err
	}
	defer deregister()
	return svc.Run(ctx)
}
