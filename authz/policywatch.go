package authz

import (
	"context"
	"fmt"
	"time"

	"github.com/leakytokens/leaky/internal/policy"
	"github.com/leakytokens/leaky/internal/serve"
	"github.com/leakytokens/leaky/internal/xdsconfig"
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

// watchPolicy follows the one source of policy changes until ctx ends:
// the control plane when ConfigXDS is set (the subscriber applies, NACKs
// and logs), else the policy path, polled every interval with the policy
// watcher. A changed, valid policy is swapped in; a rejected one is
// logged and the last good policy keeps serving. The watcher starts from
// what the path holds now, so a change made between New and Run is not
// missed.
func (s *Service) watchPolicy(ctx context.Context, interval time.Duration) {
	if s.xds != nil {
		_ = s.xds.Run(ctx)
		return
	}
	path := s.cfg.PolicyPath
	if path == "" {
		return
	}
	var current *policy.Snapshot
	if snap, err := policy.Load(path); err == nil && s.applyPolicy(snap) == nil {
		current = snap
	}
	w := policy.NewWatcher(path, current, s.applyPolicy)
	_ = w.Run(ctx, interval, func(_ *policy.Snapshot, err error) {
		if err != nil {
			s.logger.Warn("policy reload rejected; the last good policy keeps serving", serve.KeyPath, path, serve.KeyError, err.Error())
			return
		}
		s.logger.Info("policy reloaded", serve.KeyPath, path)
	})
}

// applyPolicy installs the policy of a snapshot from the file watcher or
// the xDS subscriber (one of them, from one goroutine); a snapshot without
// a leaky-tokens policy is refused. A snapshot with the digest of the one
// applied last is a no-op.
func (s *Service) applyPolicy(snap *policy.Snapshot) error {
	s.policyMu.Lock()
	defer s.policyMu.Unlock()
	if s.policyDigest == snap.Digest() {
		return nil
	}
	pol, err := policyOf(snap)
	if err != nil {
		return err
	}
	s.policy.Store(pol)
	s.policyDigest = snap.Digest()
	return nil
}

// subscribe builds the xDS subscriber when ConfigXDS is set; Run starts
// it in place of the file watcher.
func (s *Service) subscribe() error {
	if s.cfg.ConfigXDS == "" {
		return nil
	}
	sub, err := xdsconfig.New(s.cfg.ConfigXDS, s.applyPolicy, xdsconfig.Options{
		Node: xdsconfig.NodeFor("authz"), Logger: s.logger, Registerer: s.reg})
	if err != nil {
		return err
	}
	s.xds = sub
	return nil
}
