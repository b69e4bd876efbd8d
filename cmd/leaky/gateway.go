package main

import (
	"context"
	"fmt"

	"github.com/leakytokens/leaky/envoy/standin"
	"github.com/leakytokens/leaky/internal/serve"
)

// runGateway runs the gateway stand-in until ctx ends.
func runGateway(ctx context.Context, e env, args []string) error {
	cfg := standin.DefaultConfig()
	fs := newFlagSet(e, "gateway", "gateway [flags]")
	cfg.RegisterFlags(fs)
	if err := parseFlags(e, fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("gateway: unexpected arguments %q: %w", fs.Args(), errUsage)
	}
	gw, err := standin.New(cfg, e.logger.With(serve.KeyService, "gateway"))
	if err != nil {
		return fmt.Errorf("gateway: %w", err)
	}
	return gw.Run(ctx)
}
