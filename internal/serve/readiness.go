package serve

import (
	"context"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// Probe is one readiness check: the service takes traffic only while every
// probe's Check returns nil. Check gets a context bounded by
// ReadinessTimeout.
type Probe struct {
	Name  string // short and stable: it is shown in /readyz and the logs
	Check func(ctx context.Context) error
}

// readiness runs the probes and holds their last outcome. Every change of
// the outcome is published (to gRPC health) under the same lock /readyz
// reads it with, so the two never disagree.
type readiness struct {
	probes  []Probe
	log     *slog.Logger
	kick    chan struct{}
	still   map[string]*Throttle // probe name → its "still failing" lines
	publish func(ready bool)     // called under mu with each outcome

	mu       sync.Mutex
	failing  map[string]bool // probe name → failed at the last run
	stopping bool
}

// newReadiness returns a readiness that calls publish, under its lock,
// with every outcome runOnce records.
func newReadiness(probes []Probe, log *slog.Logger, publish func(ready bool)) *readiness {
	r := &readiness{probes: probes, log: log, kick: make(chan struct{}, 1), publish: publish,
		still: map[string]*Throttle{}, failing: map[string]bool{}}
	for _, p := range probes {
		r.still[p.Name] = NewThrottle(time.Minute)
	}
	return r
}

// recheck asks for a run now, without waiting for it.
func (r *readiness) recheck() {
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

// runOnce runs every probe (concurrently, each within timeout), records
// the outcome and publishes it, logging a probe that starts or stops
// failing (and one still failing at most once a minute per probe).
func (r *readiness) runOnce(ctx context.Context, timeout time.Duration) {
	errs := make([]error, len(r.probes))
	var wg sync.WaitGroup
	for i, p := range r.probes {
		wg.Go(func() {
			pctx, cancel := context.WithTimeout(ctx, timeout)
			defer cancel()
			errs[i] = p.Check(pctx)
		})
	}
	wg.Wait()
	if ctx.Err() != nil {
		return // stopping: a probe cut short says nothing
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for i, p := range r.probes {
		was, now := r.failing[p.Name], errs[i] != nil
		r.failing[p.Name] = now
		switch {
		case now && !was:
			r.log.Warn("readiness probe failing: not serving", KeyProbe, p.Name, KeyError, errs[i].Error())
		case now:
			if ok, skipped := r.still[p.Name].Allow(time.Now()); ok {
				r.log.Warn("readiness probe still failing", KeyProbe, p.Name, KeyError, errs[i].Error(), KeySkipped, skipped)
			}
		case was:
			r.log.Info("readiness probe passing again", KeyProbe, p.Name)
		}
	}
	r.publish(r.readyLocked())
}

// readyLocked reports whether the service should take traffic; r.mu is
// held.
func (r *readiness) readyLocked() bool {
	if r.stopping {
		return false
	}
	for _, f := range r.failing {
		if f {
			return false
		}
	}
	return true
}

// state reports whether the service should take traffic and which probes
// fail, sorted.
func (r *readiness) state() (ready bool, failing []string, stopping bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for name, f := range r.failing {
		if f {
			failing = append(failing, name)
		}
	}
	slices.Sort(failing)
	return r.readyLocked(), failing, r.stopping
}

// stop marks the service stopping and calls shutdown under the same lock,
// so /readyz answers 503 from the moment health is shut down.
func (r *readiness) stop(shutdown func()) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.stopping = true
	shutdown()
}

// publish sets the gRPC health of "" and every registered service (not the
// runtime's own health and reflection services) to ready's status. The
// readiness calls it under its lock.
func (s *Server) publish(ready bool) {
	st := healthpb.HealthCheckResponse_SERVING
	if !ready {
		st = healthpb.HealthCheckResponse_NOT_SERVING
	}
	s.health.SetServingStatus("", st)
	for name := range s.grpc.GetServiceInfo() {
		if !strings.HasPrefix(name, "grpc.") {
			s.health.SetServingStatus(name, st)
		}
	}
}

// watchReadiness runs the probes every ReadinessInterval, and at once after
// Recheck, until ctx ends; runOnce publishes each outcome.
func (s *Server) watchReadiness(ctx context.Context) error {
	t := time.NewTicker(s.cfg.ReadinessInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		case <-s.ready.kick:
		}
		s.ready.runOnce(ctx, s.cfg.ReadinessTimeout)
	}
}

// readyz answers 200 {"status":"ok"} while ready, else 503
// {"status":"unavailable","failing":[probe names],"stopping":bool}. It
// names probes, never their errors (which are logged). With
// Options.Degraded reporting reasons, a ready service answers 200
// {"status":"degraded","degraded":[reasons]} and an unready one adds
// "degraded":[reasons] to its 503.
func (s *Server) readyz(w http.ResponseWriter, _ *http.Request) {
	ok, failing, stopping := s.ready.state()
	var degraded []string
	if s.degraded != nil {
		degraded = s.degraded()
	}
	switch {
	case ok && len(degraded) == 0:
		WriteJSON(w, http.StatusOK, map[string]string{"status": "ok"})
		return
	case ok:
		WriteJSON(w, http.StatusOK, map[string]any{"status": "degraded", "degraded": degraded})
		return
	}
	if failing == nil {
		failing = []string{}
	}
	body := map[string]any{"status": "unavailable", "failing": failing, "stopping": stopping}
	if len(degraded) > 0 {
		body["degraded"] = degraded
	}
	WriteJSON(w, http.StatusServiceUnavailable, body)
}
