package main

import (
	"context"
	"fmt"
	"net"

	"github.com/hashicorp/consul/api"

	"github.com/leakytokens/leaky/controlplane"
	"github.com/leakytokens/leaky/controlplane/consul"
	"github.com/leakytokens/leaky/controlplane/model"
	"github.com/leakytokens/leaky/internal/serve"
)

// runControlplane runs the xDS control plane until ctx ends: the policy
// from -policy (or Consul KV with -consul-addr), the endpoints from the
// flags (or the Consul catalog).
func runControlplane(ctx context.Context, e env, args []string) error {
	cfg := controlplane.DefaultConfig()
	fs := newFlagSet(e, "controlplane", "controlplane [-policy PATH] [-consul-addr ADDR] [-endpoint SERVICE=HOST:PORT …] [flags]")
	cfg.RegisterFlags(fs)
	if err := parseFlags(e, fs, args); err != nil {
		return err
	}
	if _, port, err := net.SplitHostPort(cfg.Listener); err == nil && port == "0" {
		// Port 0 means "set later" to a process that binds the gateway
		// itself (leaky dev); alone, nothing would ever set it.
		return fmt.Errorf("controlplane: -listener %s: name the gateway's port (Envoy's listener binds it): %w", cfg.Listener, errUsage)
	}
	deps, err := controlplaneDeps(cfg.ConsulAddr)
	if err != nil {
		return err
	}
	svc, err := controlplane.New(cfg, e.logger.With(serve.KeyService, "controlplane"), deps)
	if err != nil {
		return err
	}
	return svc.Run(ctx)
}

// controlplaneDeps are the control plane's sources: with consulAddr the
// catalog and KV of that agent, else none (the policy file and the static
// endpoints).
func controlplaneDeps(consulAddr string) (controlplane.Deps, error) {
	var deps controlplane.Deps
	if consulAddr == "" {
		return deps, nil
	}
	c, err := newConsulClient(consulAddr)
	if err != nil {
		return deps, err
	}
	deps.Catalog, deps.KV = consulClient{c}, consulClient{c}
	return deps, nil
}

// consulClient is controlplane/consul on one client, as the control plane's
// Catalog and KV.
type consulClient struct{ c *api.Client }

func (cc consulClient) WatchServices(ctx context.Context, names []string, report func(map[string][]model.Endpoint, error)) {
	consul.WatchServices(ctx, cc.c, names, report)
}

func (cc consulClient) WatchKey(ctx context.Context, key string, report func([]byte, uint64, bool, error)) {
	consul.WatchKey(ctx, cc.c, key, report)
}

func (cc consulClient) PutKeyCAS(ctx context.Context, key string, value []byte, index uint64) (bool, error) {
	return consul.PutKeyCAS(ctx, cc.c, key, value, index)
}
