package ratelimit

import (
	"context"
	"sync"
	"time"

	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// Health checks of the store run this often, and at once after a failed call.
const (
	healthInterval = time.Second
	pingTimeout    = 200 * time.Millisecond
)

// healthState tracks whether the store answers. It feeds /readyz and gRPC
// health (service "" and the RateLimitService name).
type healthState struct {
	ping func(context.Context) error
	kick chan struct{}

	mu       sync.Mutex
	storeErr error
	stopping bool
}

func newHealthState(ping func(context.Context) error) *healthState {
	return &healthState{ping: ping, kick: make(chan struct{}, 1)}
}

// storeFailed asks for a check now; a call has just failed.
func (h *healthState) storeFailed() {
	select {
	case h.kick <- struct{}{}:
	default:
	}
}

func (h *healthState) shutdown() {
	h.mu.Lock()
	h.stopping = true
	h.mu.Unlock()
}

// ready reports whether the service should take traffic, and why not.
func (h *healthState) ready() (bool, string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	switch {
	case h.stopping:
		return false, "shutting down"
	case h.storeErr != nil:
		return false, "store unavailable"
	}
	return true, ""
}

// run checks the store until ctx ends, publishing to hs.
func (h *healthState) run(ctx context.Context, hs *health.Server) error {
	t := time.NewTicker(healthInterval)
	defer t.Stop()
	for {
		pctx, cancel := context.WithTimeout(ctx, pingTimeout)
		err := h.ping(pctx)
		cancel()
		if ctx.Err() != nil {
			return nil
		}
		h.mu.Lock()
		h.storeErr = err
		h.mu.Unlock()
		st := healthpb.HealthCheckResponse_SERVING
		if err != nil {
			st = healthpb.HealthCheckResponse_NOT_SERVING
		}
		hs.SetServingStatus("", st)
		hs.SetServingStatus("envoy.service.ratelimit.v3.RateLimitService", st)
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		case <-h.kick:
		}
	}
}
