package main

import (
	"context"
	"fmt"

	"github.com/leakytokens/leaky/controlplane/model"
	"github.com/leakytokens/leaky/internal/serve"
)

// registerPieces, with Consul, registers every listener of dev in the
// catalog, each with its health check, so that the control plane (on the
// same catalog) finds them there and nothing is pinned: ratelimit's and
// authz's gRPC and HTTP listeners (checked through their /readyz), each
// provider stub (its /healthz), and the control plane's HTTP listener as
// model.ServiceControlplaneHTTP (its /readyz). Each piece's registrations
// are kept while it runs (registerInstances re-registers what a restarted
// agent lost) and removed when its Run returns, or at close when it never
// ran. What stays static is what the catalog cannot give: the control
// plane's xDS address, which ratelimit, authz and the gateway are started
// with (the control plane cannot be discovered through itself), the
// gateway's own listener, and authz's key set URL, which the control
// plane's admin API verifies tokens with.
func (d *dev) registerPieces(ctx context.Context) error {
	if d.consulAddr == "" {
		return nil
	}
	pieces := map[string][]instance{
		"providers-stub": providerInstances(d.stub.Addrs()),
		"ratelimit":      serviceInstances(model.ServiceRatelimitGRPC, d.rl.GRPCAddr(), model.ServiceRatelimitHTTP, d.rl.HTTPAddr()),
		"authz":          serviceInstances(model.ServiceAuthzGRPC, d.az.GRPCAddr(), model.ServiceAuthzHTTP, d.az.HTTPAddr()),
		"controlplane":   {{model.ServiceControlplaneHTTP, d.cp.HTTPAddr(), "http://" + d.cp.HTTPAddr() + "/readyz"}},
	}
	for i, r := range d.runners {
		instances, ok := pieces[r.name]
		if !ok {
			continue
		}
		deregister, err := registerInstances(ctx, d.e.logger.With(serve.KeyService, r.name), d.consulAddr, instances)
		if err != nil {
			return fmt.Errorf("%s: %w", r.name, err)
		}
		d.closers = append(d.closers, deregister)
		run := r.run
		d.runners[i].run = func(ctx context.Context) error {
			defer deregister()
			return run(ctx)
		}
	}
	return nil
}
