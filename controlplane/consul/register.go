package consul

import (
	"context"
	"errors"
	"fmt"

	"github.com/hashicorp/consul/api"
)

// Registration is a service instance to register with the local agent.
type Registration struct {
	Name    string // the catalog name (model.Service…, model.ProviderService); required
	ID      string // unique on the agent; Name when empty
	Address string // the address the gateway dials; the agent's node address when empty
	Port    int    // 1-65535
	// HealthURL is polled by the agent with GET every second; any 2xx marks
	// the instance passing. The instance starts critical and is not served
	// until the first check passes; an instance critical for a minute is
	// deregistered by the agent. Empty means no check: always passing.
	HealthURL string
}

// Register adds r to the local agent's services, replacing an instance with
// the same ID and its checks. deregister removes it again; call it on
// shutdown.
func Register(ctx context.Context, c *api.Client, r Registration) (deregister func(context.Context) error, err error) {
	if r.Name == "" {
		return nil, errors.New("consul: register: a service needs a name")
	}
	if r.Port < 1 || r.Port > 65535 {
		return nil, fmt.Errorf("consul: register %s: port %d is not 1-65535", r.Name, r.Port)
	}
	id := r.ID
	if id == "" {
		id = r.Name
	}
	reg := &api.AgentServiceRegistration{ID: id, Name: r.Name, Address: r.Address, Port: r.Port}
	if r.HealthURL != "" {
		reg.Check = &api.AgentServiceCheck{
			Name:                           r.Name + " health",
			HTTP:                           r.HealthURL,
			Interval:                       "1s",
			DeregisterCriticalServiceAfter: "1m",
		}
	}
	opts := api.ServiceRegisterOpts{ReplaceExistingChecks: true}.WithContext(ctx)
	if err := c.Agent().ServiceRegisterOpts(reg, opts); err != nil {
		return nil, fmt.Errorf("consul: register %s: %w", id, err)
	}
	return func(ctx context.Context) error {
		if err := c.Agent().ServiceDeregisterOpts(id, (&api.QueryOptions{}).WithContext(ctx)); err != nil {
			return fmt.Errorf("consul: deregister %s: %w", id, err)
		}
		return nil
	}, nil
}
