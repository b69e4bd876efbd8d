package main

import (
	"context"

	"github.com/leakytokens/leaky/internal/serve"
	"github.com/leakytokens/leaky/ratelimit"
)

// runRatelimit runs the rate-limit service until ctx ends.
func runRatelimit(ctx context.Context, e env, args []string) error {
	cfg := ratelimit.DefaultConfig()
	fs := newFlagSet(e, "ratelimit", "ratelimit [flags]")
	cfg.RegisterFlags(fs)
	if err := parseFlags(e, fs, args); err != nil {
		return err
	}
	svc, err := newRatelimit(ctx, cfg, e.logger.With(serve.KeyService, "ratelimit"))
	if err != nil {
		return err
	}
	return svc.Run(ctx)
}
