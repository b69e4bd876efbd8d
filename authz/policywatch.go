package authz

import (
	"context"
	"os"
	"time"
)

// watchPolicy reloads the policy file when its size or modification time
// changes, checking every interval until ctx ends. A file that fails to
// parse is logged and ignored: the last good policy keeps serving.
func (s *Service) watchPolicy(ctx context.Context, interval time.Duration) {
	path := s.cfg.PolicyPath
	if path == "" {
		return
	}
	stamp := func() (time.Time, int64) {
		fi, err := os.Stat(path)
		if err != nil {
			return time.Time{}, -1
		}
		return fi.ModTime(), fi.Size()
	}
	lastMod, lastSize := stamp()
	s.every(ctx, interval, func(context.Context) {
		mod, size := stamp()
		if size < 0 || (mod.Equal(lastMod) && size == lastSize) {
			return
		}
		lastMod, lastSize = mod, size
		pol, err := loadPolicy(path)
		if err != nil {
			s.logger.Warn("policy reload rejected; the last good policy keeps serving", "error", err.Error())
			return
		}
		s.policy.Store(pol)
		s.logger.Info("policy reloaded", "path", path)
	})
}
