package providersstub

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// metrics are the stub's Prometheus metrics, served at /metrics on every
// provider's listener (the same registry on each).
type metrics struct {
	reg      *prometheus.Registry
	requests *prometheus.CounterVec
	tokens   *prometheus.CounterVec
}

func newMetrics() *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "leaky_stub_requests_total",
			Help: "Requests answered, by provider, API (chat, completions, embeddings, generate, stream_generate, seed, unknown) and status (499: the client left first).",
		}, []string{"provider", "api", "status"}),
		tokens: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "leaky_stub_tokens_total",
			Help: "Tokens of the answers produced, as counted (before any usage knob), by provider and kind (prompt, completion).",
		}, []string{"provider", "kind"}),
	}
	m.reg.MustRegister(m.requests, m.tokens,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

func (m *metrics) request(provider, api string, status int) {
	m.requests.WithLabelValues(provider, api, strconv.Itoa(status)).Inc()
}

func (m *metrics) produced(provider string, u usage) {
	m.tokens.WithLabelValues(provider, "prompt").Add(float64(u.prompt))
	m.tokens.WithLabelValues(provider, "completion").Add(float64(u.completion))
}
