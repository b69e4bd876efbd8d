package ratelimit

import "github.com/prometheus/client_golang/prometheus"

// Settlement outcomes of the metering, the "outcome" label of
// ratelimit_meter_settles_total.
const (
	outcomeUsage    = "usage"    // at the usage the response reported
	outcomeEstimate = "estimate" // usage missing, absurd or unreadable: at the estimate
	outcomeAborted  = "aborted"  // the stream ended early: at what was streamed
	outcomeError    = "error"    // the provider answered 4xx/5xx without a usage: at 0
	outcomeUnknown  = "unknown"  // no open reservation by that id (unknown, settled, expired)
	outcomeFailed   = "failed"   // the store failed to apply the settlement
	outcomeExpire   = "expire"   // no estimate known: left open to expire at the reservation's own
)

// meterMetrics are the metering's series.
type meterMetrics struct {
	settles     *prometheus.CounterVec
	stripped    prometheus.Counter
	clamped     prometheus.Counter
	forced      prometheus.Counter
	reserveFull prometheus.Counter
}

func newMeterMetrics(reg prometheus.Registerer) *meterMetrics {
	m := &meterMetrics{
		settles: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ratelimit_meter_settles_total",
			Help: "Reservations the metering settled, by outcome (usage, estimate, aborted, error, unknown, failed, expire).",
		}, []string{"outcome"}),
		stripped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ratelimit_meter_stripped_chunks_total", Help: "Usage chunks removed from streams whose client had not asked for them.",
		}),
		clamped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ratelimit_meter_clamped_requests_total", Help: "Requests whose completion limit the metering lowered or set.",
		}),
		forced: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ratelimit_meter_forced_usage_total", Help: "Streaming requests the metering added stream_options.include_usage to.",
		}),
		reserveFull: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ratelimit_meter_reservations_full_total", Help: "Requests with a request id decided without a reservation because the ledger was full.",
		}),
	}
	reg.MustRegister(m.settles, m.stripped, m.clamped, m.forced, m.reserveFull)
	return m
}
