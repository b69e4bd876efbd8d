package xdsconfig

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the subscriber's series, registered in the service's
// registry. The version label of an info series changes with every
// applied configuration; the series is reset first, so there is one.
type metrics struct {
	applied   prometheus.Counter
	rejected  prometheus.Counter
	connected prometheus.Gauge
	info      *prometheus.GaugeVec // version: of the Runtime
	rlsInfo   *prometheus.GaugeVec // version: of the RateLimitConfigs; registered only with rls
}

func newMetrics(reg prometheus.Registerer, rls bool) (*metrics, error) {
	updates := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "leaky_xds_config_updates_total",
		Help: "Configurations received over xDS (a Runtime or a set of RateLimitConfigs), by result: applied (ACKed) or rejected (NACKed; the last good one kept serving). A rejected version the server sends again is counted once.",
	}, []string{"result"})
	m := &metrics{
		applied:  updates.WithLabelValues("applied"),
		rejected: updates.WithLabelValues("rejected"),
		connected: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "leaky_xds_config_connected",
			Help: "1 while the subscription stream to the control plane is open, else 0.",
		}),
		info: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "leaky_xds_config_applied_info",
			Help: "1, labelled with the version_info of the last Runtime applied from xDS (absent before the first).",
		}, []string{"version"}),
		rlsInfo: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "leaky_xds_ratelimitconfig_applied_info",
			Help: "1, labelled with the version_info of the last RateLimitConfig resources applied from xDS (absent before the first).",
		}, []string{"version"}),
	}
	if reg == nil {
		return m, nil
	}
	cs := []prometheus.Collector{updates, m.connected, m.info}
	if rls {
		cs = append(cs, m.rlsInfo)
	}
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("xds config metrics: %w", err)
		}
	}
	return m, nil
}
