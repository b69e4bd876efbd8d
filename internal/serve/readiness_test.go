package serve

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// Each probe has its own "still failing" throttle: one probe failing on
// every run does not silence another's repeat line.
func TestStillFailingIsThrottledPerProbe(t *testing.T) {
	var logs bytes.Buffer
	down := func(context.Context) error { return errors.New("down") }
	r := newReadiness([]Probe{{"db", down}, {"keys", down}}, slog.New(slog.NewTextHandler(&logs, nil)), func(bool) {})
	for range 3 {
		r.runOnce(context.Background(), time.Second)
	}
	still := map[string]int{}
	for line := range strings.Lines(logs.String()) {
		if strings.Contains(line, "still failing") {
			for _, name := range []string{"db", "keys"} {
				if strings.Contains(line, KeyProbe+"="+name+" ") {
					still[name]++
				}
			}
		}
	}
	// Run 1 logs "failing", run 2 each probe's first "still failing", run 3
	// is within the minute for both.
	if want := map[string]int{"db": 1, "keys": 1}; !cmp.Equal(still, want) {
		t.Errorf("\"still failing\" lines per probe after 3 failing runs = %v, want %v\n%s", still, want, logs.String())
	}
}

// What runOnce publishes to gRPC health is what /readyz reads, at the
// moment it publishes: the publish runs under the lock state takes, after
// the outcome is recorded. stop shuts health down under the same lock.
func TestPublishMatchesState(t *testing.T) {
	var probeErr error
	probe := func(context.Context) error { return probeErr }
	var published []bool
	var r *readiness
	r = newReadiness([]Probe{{"db", probe}}, slog.New(slog.DiscardHandler), func(ready bool) {
		if r.mu.TryLock() {
			r.mu.Unlock()
			t.Error("publish called without the readiness lock held")
		}
		published = append(published, ready)
	})
	for _, step := range []struct {
		name string
		err  error
		want bool
	}{
		{"passing", nil, true},
		{"failing", errors.New("down"), false},
		{"passing again", nil, true},
	} {
		probeErr = step.err
		r.runOnce(context.Background(), time.Second)
		ready, _, _ := r.state()
		if len(published) == 0 || published[len(published)-1] != ready || ready != step.want {
			t.Errorf("%s: published %v, state ready = %v, want both %v", step.name, published, ready, step.want)
		}
	}
	shut := false
	r.stop(func() {
		if r.mu.TryLock() {
			r.mu.Unlock()
			t.Error("stop's shutdown called without the readiness lock held")
		}
		shut = true
	})
	if ready, _, stopping := r.state(); !shut || ready || !stopping {
		t.Errorf("after stop: shutdown called = %v, state ready = %v stopping = %v, want true, false, true", shut, ready, stopping)
	}
}
