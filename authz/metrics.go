package authz

import "github.com/prometheus/client_golang/prometheus"

// metrics are the HTTP API's Prometheus series (Check's are package
// extauthz's). No label carries a user, key or organisation, so the series
// count is fixed.
type metrics struct {
	httpRequests *prometheus.CounterVec // route, code
	tokens       *prometheus.CounterVec // grant
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		httpRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "leaky_authz_http_requests_total",
			Help: "HTTP API requests by route pattern and status code.",
		}, []string{"route", "code"}),
		tokens: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "leaky_authz_tokens_issued_total",
			Help: "Access tokens issued by grant (login, register, client_credentials, refresh_token).",
		}, []string{"grant"}),
	}
	reg.MustRegister(m.httpRequests, m.tokens)
	return m
}
