package extauthz

import "github.com/prometheus/client_golang/prometheus"

// metrics are Check's Prometheus series. No label carries a user, key or
// organisation, so the series count is fixed.
type metrics struct {
	checks       *prometheus.CounterVec // credential, result
	checkSeconds prometheus.Histogram
	keyCache     *prometheus.CounterVec // result: hit, miss, malformed
	storeErrors  prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		checks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "leaky_authz_checks_total",
			Help: "ext_authz checks by credential (jwt, api_key, none) and result (ok, unauthenticated, forbidden, invalid, unavailable).",
		}, []string{"credential", "result"}),
		checkSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "leaky_authz_check_duration_seconds",
			Help:    "Time to answer an ext_authz check.",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .15, .2},
		}),
		keyCache: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "leaky_authz_api_key_cache_total",
			Help: "API key verifications by how they were answered: hit (cache), miss (store), malformed (refused without a lookup).",
		}, []string{"result"}),
		storeErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "leaky_authz_store_errors_total",
			Help: "Store calls from Check that failed or missed their deadline.",
		}),
	}
	reg.MustRegister(m.checks, m.checkSeconds, m.keyCache, m.storeErrors)
	return m
}
