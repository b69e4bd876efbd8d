package main

import (
	"context"
	"fmt"
	"maps"
	"slices"

	"github.com/leakytokens/leaky/internal/serve"
	providersstub "github.com/leakytokens/leaky/providers-stub"
)

// runProvidersStub serves the fake providers until ctx ends.
func runProvidersStub(ctx context.Context, e env, args []string) error {
	cfg := providersstub.DefaultConfig()
	fs := newFlagSet(e, "providers-stub", "providers-stub [flags]")
	cfg.RegisterFlags(fs)
	var consulAddr string
	fs.StringVar(&consulAddr, "consul-addr", "", "Consul agent HTTP address (host:port): register each provider there as leaky-provider-<name>, with /healthz as its check")
	if err := parseFlags(e, fs, args); err != nil {
		return err
	}
	srv, err := providersstub.New(cfg, e.logger.With(serve.KeyService, "providers-stub"))
	if err != nil {
		return err
	}
	deregister, err := announceProviders(ctx, e, consulAddr, srv.Addrs())
	if err != nil {
		srv.Close()
		return err
	}
	defer deregister()
	return srv.Run(ctx)
}

// announceProviders prints the bound address of every provider served
// (provider name → host:port), one line each ("providers-stub: openai
// http://127.0.0.1:8093"), and with consulAddr registers each in Consul as
// model.ProviderService(name) with its /healthz as the check. It returns
// what deregisters them once the stub has stopped.
func announceProviders(ctx context.Context, e env, consulAddr string, addrs map[string]string) (deregister func(), err error) {
	for _, name := range slices.Sorted(maps.Keys(addrs)) {
		fmt.Fprintf(e.stdout, "providers-stub: %s http://%s\n", name, addrs[name])
	}
	return registerInstances(ctx, e.logger, consulAddr, providerInstances(addrs))
}
