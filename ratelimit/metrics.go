package ratelimit

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the service's Prometheus series. Labels carry domains,
// descriptor keys and error kinds, never descriptor values: the series count
// does not grow with users.
type metrics struct {
	reg *prometheus.Registry

	totalHits, overLimit, nearLimit, withinLimit, shadowMode *prometheus.CounterVec
	noRule                                                   *prometheus.CounterVec
	invalid                                                  *prometheus.CounterVec
	backendErrs                                              *prometheus.CounterVec
	failureMode                                              *prometheus.CounterVec
	decisionTime                                             prometheus.Histogram
	configOK                                                 prometheus.Counter
	configErr                                                prometheus.Counter
	evictions                                                prometheus.CounterFunc
	meter                                                    *meterMetrics // the metering (ext_proc)

	// rules caches the counters of each (domain, descriptor keys) so the hot
	// path skips label hashing.
	rules sync.Map // ruleLabels → *ruleCounters
}

type ruleLabels struct{ domain, key string }

type ruleCounters struct {
	totalHits, overLimit, nearLimit, withinLimit, shadowMode prometheus.Counter
}

func newMetrics(evictions func() float64) *metrics {
	m := &metrics{reg: prometheus.NewRegistry()}
	rule := func(name, help string) *prometheus.CounterVec {
		return prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ratelimit_service_rate_limit_" + name, Help: help,
		}, []string{"domain", "key"})
	}
	m.totalHits = rule("total_hits", "Hits (tokens) asked of descriptors with a rule.")
	m.overLimit = rule("over_limit", "Hits refused because the descriptor was over its limit.")
	m.nearLimit = rule("near_limit", "Hits admitted that left less than 20% of the limit.")
	m.withinLimit = rule("within_limit", "Hits admitted.")
	m.shadowMode = rule("shadow_mode", "Hits over the limit on a shadow-mode rule (admitted).")
	m.noRule = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "ratelimit_service_no_rule_total", Help: "Descriptors that matched no rule and were answered OK.",
	}, []string{"domain"})
	m.invalid = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "ratelimit_service_invalid_requests_total", Help: "Requests refused with INVALID_ARGUMENT, by reason.",
	}, []string{"reason"})
	m.backendErrs = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "ratelimit_service_should_rate_limit_error", Help: "Store errors while deciding, by kind (timeout, connection, oom, script, other).",
	}, []string{"err_type"})
	m.failureMode = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "ratelimit_service_failure_mode_total", Help: "Decisions answered by the failure mode after a store error, by mode.",
	}, []string{"mode"})
	m.decisionTime = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "ratelimit_service_response_time_seconds",
		Help:    "Time to decide one ShouldRateLimit request.",
		Buckets: []float64{.00005, .0001, .00025, .0005, .001, .0025, .005, .01, .015, .02, .05},
	})
	m.configOK = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "ratelimit_service_config_load_success", Help: "Configurations loaded.",
	})
	m.configErr = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "ratelimit_service_config_load_error", Help: "Configurations rejected; the last good one kept serving.",
	})
	m.evictions = prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "ratelimit_service_memory_evictions_total", Help: "Live buckets the memory store evicted to stay within -memory-max-keys.",
	}, evictions)
	m.reg.MustRegister(m.totalHits, m.overLimit, m.nearLimit, m.withinLimit, m.shadowMode,
		m.noRule, m.invalid, m.backendErrs, m.failureMode, m.decisionTime, m.configOK, m.configErr, m.evictions)
	m.meter = newMeterMetrics(m.reg)
	return m
}

func (m *metrics) rule(domain, key string) *ruleCounters {
	k := ruleLabels{domain, key}
	if c, ok := m.rules.Load(k); ok {
		return c.(*ruleCounters)
	}
	c := &ruleCounters{
		totalHits:   m.totalHits.WithLabelValues(domain, key),
		overLimit:   m.overLimit.WithLabelValues(domain, key),
		nearLimit:   m.nearLimit.WithLabelValues(domain, key),
		withinLimit: m.withinLimit.WithLabelValues(domain, key),
		shadowMode:  m.shadowMode.WithLabelValues(domain, key),
	}
	actual, _ := m.rules.LoadOrStore(k, c)
	return actual.(*ruleCounters)
}
