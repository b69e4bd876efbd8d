package standin

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// metrics are the gateway's series, on a registry of its own.
type metrics struct {
	reg        *prometheus.Registry
	requests   *prometheus.CounterVec // route, code
	retries    *prometheus.CounterVec // cluster
	ejections  *prometheus.CounterVec // cluster
	authz      *prometheus.CounterVec // outcome: ok, denied, error
	ratelimit  *prometheus.CounterVec // outcome: ok, over_limit, error
	extProc    *prometheus.CounterVec // outcome: completed, immediate_response, error
	xdsUpdates *prometheus.CounterVec // type, result: ack, nack
	applied    prometheus.Counter
	ready      prometheus.Gauge
}

func newMetrics() *metrics {
	reg := prometheus.NewRegistry()
	f := func(name, help string, labels ...string) *prometheus.CounterVec {
		c := prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "leaky", Subsystem: "gateway", Name: name, Help: help}, labels)
		reg.MustRegister(c)
		return c
	}
	m := &metrics{
		reg:        reg,
		requests:   f("requests_total", "Requests answered, by route (its name or prefix; (none) when no route matched) and HTTP status.", "route", "code"),
		retries:    f("upstream_retries_total", "Upstream requests retried, by cluster.", "cluster"),
		ejections:  f("upstream_ejections_total", "Endpoints ejected by outlier detection, by cluster.", "cluster"),
		authz:      f("ext_authz_total", "ext_authz outcomes: ok, denied, error (the failure mode then decides).", "outcome"),
		ratelimit:  f("ratelimit_total", "Rate-limit outcomes: ok, over_limit, error (the failure mode then decides).", "outcome"),
		extProc:    f("ext_proc_total", "ext_proc streams by outcome: completed, immediate_response, error (the failure mode then decides).", "outcome"),
		xdsUpdates: f("xds_updates_total", "xDS responses by type (listener, route, cluster, endpoint) and result (ack, nack).", "type", "result"),
		applied: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "leaky", Subsystem: "gateway", Name: "config_applied_total",
			Help: "Complete configurations swapped in."}),
		ready: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "leaky", Subsystem: "gateway", Name: "ready",
			Help: "1 once a configuration is applied."}),
	}
	reg.MustRegister(m.applied, m.ready, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}
