package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/leakytokens/leaky/controlplane/consul"
	"github.com/leakytokens/leaky/controlplane/model"
	"github.com/leakytokens/leaky/internal/serve"
)

// instance is one listener a process announces in the Consul catalog, so
// that a control plane on Consul finds it: the service's catalog name, the
// bound address, and the URL the agent polls for its health (empty: none).
type instance struct {
	service, addr, healthURL string
}

const (
	// consulDeregisterTimeout bounds the deregistrations at shutdown.
	consulDeregisterTimeout = 5 * time.Second
	// consulResyncInterval is how often the registrations are compared
	// with the agent's services, and the missing ones registered again:
	// an agent that restarted empty (a -dev agent, a replaced node) has
	// them back within it. One request to the agent per interval.
	consulResyncInterval = 5 * time.Second
)

// newConsulClient is a client of the agent at addr (host:port); the rest
// of its configuration is Consul's own environment (CONSUL_HTTP_TOKEN,
// the TLS variables).
func newConsulClient(addr string) (*api.Client, error) {
	ac := api.DefaultConfig()
	ac.Address = addr
	c, err := api.NewClient(ac)
	if err != nil {
		return nil, fmt.Errorf("consul %s: %w", addr, err)
	}
	return c, nil
}

// registerInstances registers every instance with the Consul agent at
// consulAddr (host:port) under an ID naming the service and its address,
// keeps them registered (every consulResyncInterval the ones the agent
// no longer has are registered again), and returns what stops that and
// deregisters them all; it may be called more than once. An empty
// consulAddr registers nothing. A failure deregisters what was registered
// and is returned: a process told to announce itself and unable to is
// misconfigured.
func registerInstances(ctx context.Context, logger *slog.Logger, consulAddr string, instances []instance) (func(), error) {
	if consulAddr == "" {
		return func() {}, nil
	}
	c, err := newConsulClient(consulAddr)
	if err != nil {
		return nil, err
	}
	regs, err := registrations(instances)
	if err != nil {
		return nil, err
	}
	var undo []func(context.Context) error
	deregister := func() {
		ctx, cancel := context.WithTimeout(context.Background(), consulDeregisterTimeout)
		defer cancel()
		for _, d := range undo {
			if err := d(ctx); err != nil {
				logger.Warn("consul deregistration failed", serve.KeyError, err.Error())
			}
		}
	}
	for _, r := range regs {
		d, err := consul.Register(ctx, c, r)
		if err != nil {
			deregister()
			return nil, err
		}
		undo = append(undo, d)
		logger.Info("registered in consul", "consul_service", r.Name, "addr", net.JoinHostPort(r.Address, strconv.Itoa(r.Port)))
	}
	stop := keepRegistered(c, logger, regs, consulResyncInterval)
	var once sync.Once
	return func() { once.Do(func() { stop(); deregister() }) }, nil
}

// registrations are the instances as the agent is told them; an address
// that is no IP:port the gateway can dial is an error.
func registrations(instances []instance) ([]consul.Registration, error) {
	out := make([]consul.Registration, 0, len(instances))
	for _, in := range instances {
		host, port, err := net.SplitHostPort(in.addr)
		if err != nil {
			return nil, fmt.Errorf("consul: %s at %q: %w", in.service, in.addr, err)
		}
		n, err := strconv.Atoi(port)
		if err != nil {
			return nil, fmt.Errorf("consul: %s at %q: %w", in.service, in.addr, err)
		}
		if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() {
			return nil, fmt.Errorf("consul: %s listens on %q: announce an IP address the gateway can dial, not a wildcard or a name", in.service, in.addr)
		}
		out = append(out, consul.Registration{
			Name: in.service, ID: in.service + "-" + in.addr, Address: host, Port: n, HealthURL: in.healthURL,
		})
	}
	return out, nil
}

// keepRegistered re-registers, every interval until stop is called, those
// of regs the agent does not have (Consul's anti-entropy keeps an agent
// and the catalog in step, not a process and its agent). A failure is
// logged when it starts and when it ends, and tried again at the next
// tick. stop waits for the loop to end.
func keepRegistered(c *api.Client, logger *slog.Logger, regs []consul.Registration, interval time.Duration) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(interval)
		defer tick.Stop()
		failing := false
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			rctx, rcancel := context.WithTimeout(ctx, interval)
			err := resync(rctx, c, logger, regs)
			rcancel()
			switch {
			case ctx.Err() != nil:
				return
			case err != nil && !failing:
				logger.Warn("consul registrations cannot be checked; trying again", serve.KeyError, err.Error())
			case err == nil && failing:
				logger.Info("consul registrations checked again")
			}
			failing = err != nil
		}
	}()
	return func() { cancel(); <-done }
}

// resync registers those of regs the agent lacks.
func resync(ctx context.Context, c *api.Client, logger *slog.Logger, regs []consul.Registration) error {
	have, err := c.Agent().ServicesWithFilterOpts("", (&api.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return fmt.Errorf("consul: the agent's services: %w", err)
	}
	for _, r := range regs {
		if _, ok := have[r.ID]; ok {
			continue
		}
		if _, err := consul.Register(ctx, c, r); err != nil {
			return err
		}
		logger.Info("registered in consul again: the agent had lost it", "consul_service", r.Name, "consul_id", r.ID)
	}
	return nil
}

// consulAddrFlag adds -consul-addr to fs: the Consul agent a service
// registers its listeners with (empty: CONSUL_HTTP_ADDR, Consul's own
// variable; both empty: no registration).
func consulAddrFlag(fs *flag.FlagSet, addr *string) {
	fs.StringVar(addr, "consul-addr", "", "Consul agent HTTP address (host:port) to register this service's gRPC and HTTP listeners with, checked through /readyz; empty: CONSUL_HTTP_ADDR, or no registration")
}

// consulAddrOf is the flag's value, else CONSUL_HTTP_ADDR without a scheme.
func consulAddrOf(e env, flagValue string) string {
	if flagValue != "" {
		return flagValue
	}
	v := e.getenv("CONSUL_HTTP_ADDR")
	v = strings.TrimPrefix(strings.TrimPrefix(v, "http://"), "https://")
	return v
}

// serviceInstances are a service's two listeners as catalog instances,
// both checked through the HTTP listener's /readyz (a service that cannot
// decide is not routed to).
func serviceInstances(grpcService, grpcAddr, httpService, httpAddr string) []instance {
	ready := "http://" + httpAddr + "/readyz"
	return []instance{{grpcService, grpcAddr, ready}, {httpService, httpAddr, ready}}
}

// providerInstances are the provider stubs (provider name → bound
// address) as catalog instances, model.ProviderService(name), each checked
// through its /healthz.
func providerInstances(addrs map[string]string) []instance {
	var out []instance
	for _, name := range slices.Sorted(maps.Keys(addrs)) {
		out = append(out, instance{model.ProviderService(name), addrs[name], "http://" + addrs[name] + "/healthz"})
	}
	return out
}
