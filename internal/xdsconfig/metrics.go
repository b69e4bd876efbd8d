package xdsconfig

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the subscriber's series, registered in the service's
// registry. The version label of the info series changes with every
// applied configuration; the series is reset first, so there is one.
type metrics struct {
	applied   prometheus.Counter
	rejected  prometheus.Counter
	connected prometheus.Gauge
	info      *prometheus.GaugeVec // version
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	updates := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "leaky_xds_config_updates_total",
		Help: "Configurations received over xDS, by result: applied (ACKed) or rejected (NACKed; the last good one kept serving). A rejected version the server sends again is counted once.",
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
			Help: "1, labelled with the version_info of the last configuration applied from xDS (absent before the first).",
		}, []string{"version"}),
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{updates, m.connected, m.info} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("xds config metrics: %w", err)
		}
	}
	return m, nil
}

func (m *metrics) appliedVersion(v string) {
	m.info.Reset()
	m.info.WithLabelValues(v).Set(1)
}
