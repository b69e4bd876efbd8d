package authz

import (
	"context"
	"fmt"
	"time"

	"github.com/leakytokens/leaky/internal/policy"
	"github.com/leakytokens/leaky/internal/serve"
)

// CheckConfig validates cfg and loads its policy path as New will, opening
// and binding nothing. cmd/leaky calls it before it opens the store cfg
// names, so that a configuration the service would refuse is reported as
// such, with its file and problem, never as a database it could not reach
// or after the migrations ran; New checks again.
func CheckConfig(cfg Config) error {
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("authz config: %w", err)
	}
	_, err := loadPolicy(cfg.PolicyPath)
	return err
}

// loadPolicy loads path with the policy loader (policy.Load: "" is the
// embedded example, else a policy file or a directory holding one). authz
// needs the tiers, so a configuration without a leaky-tokens policy is an
// error. The other domain files of a directory are the ratelimit service's:
// the loader checks only that each is YAML with a top-level domain.
func loadPolicy(path string) (*policy.Policy, error) {
	snap, err := policy.Load(path)
	if err != nil {
		return nil, fmt.Errorf("policy: %w", err)
	}
	return policyOf(snap)
}

func policyOf(snap *policy.Snapshot) (*policy.Policy, error) {
	if snap.Policy() == nil {
		return nil, fmt.Errorf("policy: %s holds no file with domain %s; authz needs its tiers", snap.Source(), policy.Domain)
	}
	return snap.Policy(), nil
}

// watchPolicy polls the policy path every interval with the policy watcher
// until ctx ends and swaps in a changed, valid policy. A rejected one is
// logged; the last good policy keeps serving. The watcher starts from what
// the path holds now, so a change made between New and Run is not missed.
func (s *Service) watchPolicy(ctx context.Context, interval time.Duration) {
	path := s.cfg.PolicyPath
	if path == "" {
		return
	}
	var current *policy.Snapshot
	if snap, err := policy.Load(path); err == nil {
		if pol, err := policyOf(snap); err == nil {
			s.policy.Store(pol)
			current = snap
		}
	}
	apply := func(snap *policy.Snapshot) error {
		pol, err := policyOf(snap)
		if err != nil {
			return err
		}
		s.policy.Store(pol)
		return nil
	}
	w := policy.NewWatcher(path, current, apply)
	_ = w.Run(ctx, interval, func(_ *policy.Snapshot, err error) {
		if err != nil {
			s.logger.Warn("policy reload rejected; the last good policy keeps serving", serve.KeyPath, path, serve.KeyError, err.Error())
			return
		}
		s.logger.Info("policy reloaded", serve.KeyPath, path)
	})
}
