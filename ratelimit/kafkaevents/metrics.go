package kafkaevents

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// relayMetrics are the relay's series, registered in the service's
// registry.
type relayMetrics struct {
	published prometheus.Counter
	failures  prometheus.Counter
	pruned    prometheus.Counter
	lag       prometheus.Histogram
}

func newRelayMetrics(reg prometheus.Registerer) (*relayMetrics, error) {
	m := &relayMetrics{
		published: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "leaky_outbox_published_events_total",
			Help: "Outbox events the publisher acknowledged (at least once: an event whose marking failed is published again and counted again).",
		}),
		failures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "leaky_outbox_relay_failures_total",
			Help: "Outbox batches that failed to publish or to be marked published; their events stay in the outbox and are retried.",
		}),
		pruned: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "leaky_outbox_pruned_events_total",
			Help: "Published outbox events deleted after the retention.",
		}),
		lag: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "leaky_outbox_publish_lag_seconds",
			Help:    "Seconds from an event's occurrence to its acknowledgement by the publisher.",
			Buckets: []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800},
		}),
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.published, m.failures, m.pruned, m.lag} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("outbox relay metrics: %w", err)
		}
	}
	return m, nil
}
