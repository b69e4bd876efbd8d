package ratelimit

import (
	"context"
	"errors"

	"github.com/leakytokens/leaky/internal/policy"
	"github.com/leakytokens/leaky/internal/serve"
)

// watchConfig polls the configuration path every ReloadInterval with the
// policy watcher and swaps in a changed configuration that is valid. A bad
// one is logged with the file and the problem and counted; the last good
// one keeps serving.
func (s *Service) watchConfig(ctx context.Context) error {
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

// applyConfig installs a valid snapshot: its rule files must parse, and it
// may not drop a serving policy.
func (s *Service) applyConfig(snap *policy.Snapshot) error {
	l, err := newLimits(snap)
	if err != nil {
		return err
	}
	if l.policy == nil && s.limits.Load().policy != nil {
		return errors.New("the leaky-tokens policy file is gone; a reload cannot remove it (restart to run without it)")
	}
	s.limits.Store(l)
	return nil
}
