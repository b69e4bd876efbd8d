package serve

import (
	"testing"
	"time"
)

func TestThrottle(t *testing.T) {
	th := NewThrottle(time.Second)
	t0 := time.Unix(1000, 0)
	for _, step := range []struct {
		at          time.Duration // since t0
		wantOK      bool
		wantSkipped int64
	}{
		{0, true, 0},
		{100 * time.Millisecond, false, 0},
		{999 * time.Millisecond, false, 0},
		{time.Second, true, 2},
		{1500 * time.Millisecond, false, 0},
		{5 * time.Second, true, 1},
		{6 * time.Second, true, 0},
	} {
		ok, skipped := th.Allow(t0.Add(step.at))
		if ok != step.wantOK || skipped != step.wantSkipped {
			t.Errorf("Allow(t0+%v) = %v, %d, want %v, %d", step.at, ok, skipped, step.wantOK, step.wantSkipped)
		}
	}
}
