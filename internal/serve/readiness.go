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

// readiness runs the probes and holds their last outcome.
type readiness struct {
	probes []Probe
	log    *slog.Logger
	kick   chan struct{}
	still  *Throttle // "still failing" lines

	mu       sync.Mutex
	failing  map[string]bool // probe name → failed at the last run
	stopping bool
}

func newReadiness(probes []Probe, log *slog.Logger) *readiness {
	return &readiness{probes: probes, log: log, kick: make(chan struct{}, 1),
		still: NewThrottle(time.Minute), failing: map[string]bool{}}
}

// recheck asks for a run now, without waiting for it.
func (r *readiness) recheck() {
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

// runOnce runs every probe (concurrently, each within timeout) and records
// the outcome, logging a probe that starts or stops failing.
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
			if ok, skipped := r.still.Allow(time.Now()); ok {
				r.log.Warn("readiness probe still failing", KeyProbe, p.Name, KeyError, errs[i].Error(), KeySkipped, skipped)
			}
		case was:
			r.log.Info("readiness probe passing again", KeyProbe, p.Name)
		}
	}
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
	return !r.stopping && len(failing) == 0, failing, r.stopping
}

func (r *readiness) stop() {
	r.mu.Lock()
	r.stopping = true
	r.mu.Unlock()
}

// publish sets the gRPC health of "" and every registered service (not the
// runtime's own health and reflection services) from the readiness state.
func (s *Server) publish() {
	st := healthpb.HealthCheckResponse_SERVING
	if ok, _, _ := s.ready.state(); !ok {
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
// Recheck, publishing each outcome, until ctx ends.
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
		if ctx.Err() == nil {
			s.publish()
		}
	}
}

// readyz answers 200 {"status":"ok"} while ready, else 503
// {"status":"unavailable","failing":[probe names],"stopping":bool}. It
// names probes, never their errors (which are logged).
func (s *Server) readyz(w http.ResponseWriter, _ *http.Request) {
	ok, failing, stopping := s.ready.state()
	if ok {
		WriteJSON(w, http.StatusOK, map[string]string{"status": "ok"})
		return
	}
	if failing == nil {
		failing = []string{}
	}
	WriteJSON(w, http.StatusServiceUnavailable, map[string]any{"status": "unavailable", "failing": failing, "stopping": stopping})
}
