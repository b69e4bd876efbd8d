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
	if err := parseFlags(e, fs, args); err != nil {
		return err
	}
	srv, err := providersstub.New(cfg, e.logger.With(serve.KeyService, "providers-stub"))
	if err != nil {
		return err
	}
	deregister, err := announceProviders(ctx, e, srv.Addrs())
	if err != nil {
		srv.Close()
		return err
	}
	defer deregister()
	return srv.Run(ctx)
}

// announceProviders is told the bound address of every provider served
// (provider name → host:port) before the stub serves, and returns what
// undoes the announcement once it has stopped. Today it prints one line
// per provider on stdout ("providers-stub: openai http://127.0.0.1:8093").
// Registering the stubs in Consul (-consul-addr, as
// model.ProviderService(name)) belongs here.
func announceProviders(_ context.Context, e env, addrs map[string]string) (deregister func(), err error) {
	for _, name := range slices.Sorted(maps.Keys(addrs)) {
		fmt.Fprintf(e.stdout, "providers-stub: %s http://%s\n", name, addrs[name])
	}
	return func() {}, nil
}
