package ratelimit

import (
	"context"
	"errors"

	"github.com/leakytokens/leaky/internal/policy"
	"github.com/leakytokens/leaky/internal/serve"
)

// watchConfig follows the one source of configuration changes: the
// control plane when ConfigXDS is set (the subscriber applies, NACKs, logs
// and counts), else the configuration path, polled every ReloadInterval
// with the policy watcher. A changed configuration that is valid is swapped
// in; a bad one is logged with the file and the problem and counted, and
// the last good one keeps serving.
func (s *Service) watchConfig(ctx context.Context) error {
	if s.xds != nil {
		return s.xds.Run(ctx)
	}
	if s.cfg.ConfigPath == "" {
		return nil
	}
	w := policy.NewWatcher(s.cfg.ConfigPath, s.limits.Load().snap, s.applyConfig)
	return w.Run(ctx, s.cfg.ReloadInterval, func(snap *policy.Snapshot, err error) {
		if err != nil {
			s.metrics.configErr.Inc()
			s.log.Error("config rejected; keeping the last good configuration", serve.KeyPath, s.cfg.ConfigPath, serve.KeyError, err.Error())
			return
		}
		s.metrics.configOK.Inc()
		s.log.Info("config reloaded", serve.KeyPath, s.cfg.ConfigPath)
	})
}

// applyConfig installs a valid snapshot, from the file watcher or the xDS
// subscriber (one of them, from one goroutine): its rule files must parse,
// and it may not drop a serving policy. A snapshot with the digest of the
// serving one is a no-op.
func (s *Service) applyConfig(snap *policy.Snapshot) error {
	if cur := s.limits.Load(); cur.snap != nil && cur.snap.Digest() == snap.Digest() {
		return nil
	}
	l, err := newLimits(snap, s.cfg.ruleOptions())
	if err != nil {
		return err
	}
	if l.policy == nil && s.limits.Load().policy != nil {
		return errors.New("the leaky-tokens policy file is gone; a reload cannot remove it (restart to run without it)")
	}
	s.limits.Store(l)
	return nil
}
