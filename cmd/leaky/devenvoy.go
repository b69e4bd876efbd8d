package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"

	"github.com/leakytokens/leaky/controlplane/model"
	"github.com/leakytokens/leaky/controlplane/translate"
)

// prepareEnvoy writes the bootstrap of an Envoy fed by the dev control
// plane (translate.Bootstrap, as envoy/envoy.yaml but on dev's addresses)
// and adds the envoy process to what dev runs.
func (d *dev) prepareEnvoy() error {
	xds, err := model.ParseEndpoint(d.xds)
	if err != nil {
		return err
	}
	admin, err := model.ParseEndpoint(d.gwAdmin)
	if err != nil {
		return fmt.Errorf("gateway-admin-addr: %w", err)
	}
	b, err := translate.Bootstrap(translate.EnvoyNode, translate.NodeCluster, xds, admin)
	if err != nil {
		return err
	}
	data, err := translate.YAML(b)
	if err != nil {
		return err
	}
	if err := os.WriteFile(d.bootstrap, data, 0o644); err != nil {
		return err
	}
	d.runners = append(d.runners, runner{"envoy", func(ctx context.Context) error {
		cmd := exec.CommandContext(ctx, "envoy", "-c", d.bootstrap, "--log-level", "warn")
		cmd.Stdout, cmd.Stderr = d.e.stderr, d.e.stderr
		if err := cmd.Run(); err != nil && ctx.Err() == nil {
			return fmt.Errorf("envoy: %w", err)
		}
		return nil
	}})
	return nil
}
