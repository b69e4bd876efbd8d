package ratelimit

import (
	"github.com/leakytokens/leaky/internal/serve"
)

// storeHealth ties the store to the runtime's readiness: the store probe
// decides /readyz and gRPC health (service "" and the RateLimitService
// name), runs every ReadinessInterval, and at once after a failed call, so
// health turns NOT_SERVING within a call of an outage and recovers by
// itself when the store answers again.
type storeHealth struct{ srv *serve.Server }

// storeFailed asks for a check now; a call has just failed.
func (h storeHealth) storeFailed() { h.srv.Recheck() }

// storeProbe is the readiness probe of the store: its Ping when it has one
// (Redis answers PING; the memory store is always ready).
func (s *Service) storeProbe() serve.Probe {
	return serve.Probe{Name: "store", Check: s.ping}
}
