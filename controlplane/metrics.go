package controlplane

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// metrics are the control plane's Prometheus series, in its own registry.
type metrics struct {
	reg *prometheus.Registry
	// pushes counts snapshots set in the cache: one per new version.
	pushes prometheus.Counter
	// unchanged counts rebuilds whose version equalled the one served.
	unchanged prometheus.Counter
	// refused counts models not pushed, by reason: invalid (Validate),
	// translate (the translator failed), inconsistent.
	refused *prometheus.CounterVec
	// sourceErrors counts failures of a source: policy, catalog.
	sourceErrors *prometheus.CounterVec
	// endpointsKept counts updates in which a service that had endpoints
	// reported none and kept its last ones.
	endpointsKept *prometheus.CounterVec
	// degraded is 1 while /readyz lists a reason, else 0.
	degraded prometheus.Gauge
	// xdsResponses, acks and nacks count per resource type URL.
	xdsResponses *prometheus.CounterVec
	acks         *prometheus.CounterVec
	nacks        *prometheus.CounterVec
	// streams is the number of open xDS streams.
	streams prometheus.Gauge
	// adminRequests counts admin API answers by route pattern and status.
	adminRequests *prometheus.CounterVec
}

func newMetrics() *metrics {
	const ns = "leaky_controlplane_"
	m := &metrics{
		reg: prometheus.NewRegistry(),
		pushes: prometheus.NewCounter(prometheus.CounterOpts{Name: ns + "snapshot_pushes_total",
			Help: "Snapshots set in the xDS cache (one per new version)."}),
		unchanged: prometheus.NewCounter(prometheus.CounterOpts{Name: ns + "snapshot_unchanged_total",
			Help: "Rebuilds that produced the version already served, so pushed nothing."}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{Name: ns + "model_refused_total",
			Help: "Models not pushed, by reason (invalid, translate, inconsistent, cache)."}, []string{"reason"}),
		sourceErrors: prometheus.NewCounterVec(prometheus.CounterOpts{Name: ns + "source_errors_total",
			Help: "Failures of a source (policy, catalog); the last good state keeps serving."}, []string{"source"}),
		endpointsKept: prometheus.NewCounterVec(prometheus.CounterOpts{Name: ns + "endpoints_kept_total",
			Help: "Updates in which a service reported no healthy instance and kept its last endpoints."}, []string{"service"}),
		degraded: prometheus.NewGauge(prometheus.GaugeOpts{Name: ns + "degraded",
			Help: "1 while the control plane serves a last good state because a source or the model fails."}),
		xdsResponses: prometheus.NewCounterVec(prometheus.CounterOpts{Name: ns + "xds_responses_total",
			Help: "xDS responses sent, by resource type URL."}, []string{"type"}),
		acks: prometheus.NewCounterVec(prometheus.CounterOpts{Name: ns + "xds_acks_total",
			Help: "xDS responses acknowledged, by resource type URL."}, []string{"type"}),
		nacks: prometheus.NewCounterVec(prometheus.CounterOpts{Name: ns + "xds_nacks_total",
			Help: "xDS responses rejected, by resource type URL."}, []string{"type"}),
		streams: prometheus.NewGauge(prometheus.GaugeOpts{Name: ns + "xds_streams",
			Help: "Open xDS streams."}),
		adminRequests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: ns + "admin_requests_total",
			Help: "Admin API answers by route and status code."}, []string{"route", "code"}),
	}
	m.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.pushes, m.unchanged, m.refused, m.sourceErrors, m.endpointsKept, m.degraded,
		m.xdsResponses, m.acks, m.nacks, m.streams, m.adminRequests)
	return m
}
