package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/leakytokens/leaky/controlplane/consul"
	"github.com/leakytokens/leaky/internal/serve"
)

// instance is one listener a process announces in the Consul catalog, so
// that a control plane on Consul finds it: the service's catalog name, the
// bound address, and the URL the agent polls for its health (empty: none).
type instance struct {
	service, addr, healthURL string
}

// consulDeregisterTimeout bounds the deregistrations at shutdown.
const consulDeregisterTimeout = 5 * time.Second

// registerInstances registers every instance with the Consul agent at
// consulAddr (host:port) under an ID naming the service and its address,
// and returns what deregisters them all. An empty consulAddr registers
// nothing. A failure deregisters what was registered and is returned: a
// process told to announce itself and unable to is misconfigured.
func registerInstances(ctx context.Context, logger *slog.Logger, consulAddr string, instances []instance) (func(), error) {
	if consulAddr == "" {
		return func() {}, nil
	}
	ac := api.DefaultConfig() // also CONSUL_HTTP_TOKEN and the TLS variables
	ac.Address = consulAddr
	c, err := api.NewClient(ac)
	if err != nil {
		return nil, fmt.Errorf("consul %s: %w", consulAddr, err)
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
	for _, in := range instances {
		host, port, err := net.SplitHostPort(in.addr)
		if err != nil {
			deregister()
			return nil, fmt.Errorf("consul: %s at %q: %w", in.service, in.addr, err)
		}
		n, err := strconv.Atoi(port)
		if err != nil {
			deregister()
			return nil, fmt.Errorf("consul: %s at %q: %w", in.service, in.addr, err)
		}
		if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() {
			deregister()
			return nil, fmt.Errorf("consul: %s listens on %q: announce an IP address the gateway can dial, not a wildcard or a name", in.service, in.addr)
		}
		d, err := consul.Register(ctx, c, consul.Registration{
			Name: in.service, ID: in.service + "-" + in.addr, Address: host, Port: n, HealthURL: in.healthURL,
		})
		if err != nil {
			deregister()
			return nil, err
		}
		undo = append(undo, d)
		logger.Info("registered in consul", "consul_service", in.service, "addr", in.addr)
	}
	return deregister, nil
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
