package ratelimit

import (
	"context"
	"errors"
	"time"
)

// watchConfig re-reads the configuration path every ReloadInterval and swaps
// in a changed configuration that is valid. A bad one is logged with the
// file and the problem and counted; the last good one keeps serving.
func (s *Service) watchConfig(ctx context.Context) error {
	if s.cfg.ConfigPath == "" {
		return nil
	}
	t := time.NewTicker(s.cfg.ReloadInterval)
	defer t.Stop()
	var lastBad [32]byte // digest of the last rejected contents, not reported again
	readFailing := false
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		contents, digest, err := readConfig(s.cfg.ConfigPath)
		if err != nil {
			if !readFailing {
				s.metrics.configErr.Inc()
				s.log.Error("config reload failed; keeping the last good configuration", "path", s.cfg.ConfigPath, "err", err)
			}
			readFailing = true
			continue
		}
		readFailing = false
		if digest == s.limits.Load().digest || digest == lastBad {
			continue
		}
		l, err := parseLimits(contents)
		if err == nil && l.policy == nil && s.limits.Load().policy != nil {
			err = errors.New("the leaky-tokens policy file is gone; a reload cannot remove it (restart to run without it)")
		}
		if err != nil {
			lastBad = digest
			s.metrics.configErr.Inc()
			s.log.Error("config rejected; keeping the last good configuration", "err", err)
			continue
		}
		l.digest = digest
		s.limits.Store(l)
		lastBad = [32]byte{}
		s.metrics.configOK.Inc()
		s.log.Info("config reloaded", "path", s.cfg.ConfigPath)
	}
}
