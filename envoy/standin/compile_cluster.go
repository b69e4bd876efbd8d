package standin

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	upstreamhttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// clusterConfig is a compiled Cluster (EDS, round robin).
type clusterConfig struct {
	name           string
	serviceName    string // the ClusterLoadAssignment it takes its endpoints from
	connectTimeout time.Duration
	http2          bool // h2c to the endpoints (gRPC clusters)
	limits         breakerLimits
	outlier        *outlierConfig // nil: no outlier detection
}

// breakerLimits are the DEFAULT priority's circuit-breaker thresholds.
type breakerLimits struct {
	maxConnections, maxPending, maxRequests, maxRetries int
}

type outlierConfig struct {
	consecutive5xx      int
	interval, baseEject time.Duration
	maxEjectPercent     int
}

// Envoy's defaults where a cluster leaves a field out.
const (
	defaultConnectTimeout = 5 * time.Second
	defaultBreakerLimit   = 1024
	defaultBreakerRetries = 3
	httpProtocolOptions   = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
)

func defaultOutlier() outlierConfig {
	return outlierConfig{consecutive5xx: 5, interval: 10 * time.Second, baseEject: 30 * time.Second, maxEjectPercent: 10}
}

func (c *compiler) cluster(cl *clusterv3.Cluster) (*clusterConfig, error) {
	if err := c.allow.check(cl.ProtoReflect(), ""); err != nil {
		return nil, err
	}
	if cl.GetType() != clusterv3.Cluster_EDS {
		return nil, fmt.Errorf("type %s: only EDS is implemented by the stand-in", cl.GetType())
	}
	if cl.GetLbPolicy() != clusterv3.Cluster_ROUND_ROBIN {
		return nil, fmt.Errorf("lb_policy %s: only ROUND_ROBIN is implemented by the stand-in", cl.GetLbPolicy())
	}
	eds := cl.GetEdsClusterConfig()
	if err := adsSource(eds.GetEdsConfig()); err != nil {
		return nil, fmt.Errorf("eds_cluster_config.eds_config: %w", err)
	}
	out := &clusterConfig{
		name: cl.GetName(), serviceName: eds.GetServiceName(), connectTimeout: defaultConnectTimeout,
		limits: breakerLimits{defaultBreakerLimit, defaultBreakerLimit, defaultBreakerLimit, defaultBreakerRetries},
	}
	if out.serviceName == "" {
		out.serviceName = out.name
	}
	if cl.GetConnectTimeout() != nil {
		out.connectTimeout = cl.GetConnectTimeout().AsDuration()
	}
	if err := breakers(cl.GetCircuitBreakers(), &out.limits); err != nil {
		return nil, fmt.Errorf("circuit_breakers: %w", err)
	}
	if od := cl.GetOutlierDetection(); od != nil {
		o := defaultOutlier()
		if v := od.GetConsecutive_5Xx(); v != nil {
			o.consecutive5xx = int(v.GetValue())
		}
		if d := od.GetInterval(); d != nil {
			o.interval = d.AsDuration()
		}
		if d := od.GetBaseEjectionTime(); d != nil {
			o.baseEject = d.AsDuration()
		}
		if v := od.GetMaxEjectionPercent(); v != nil {
			o.maxEjectPercent = int(min(v.GetValue(), 100))
		}
		if o.interval <= 0 || o.baseEject <= 0 {
			return nil, errors.New("outlier_detection: interval and base_ejection_time must be above 0")
		}
		out.outlier = &o
	}
	for _, key := range sortedKeys(cl.GetTypedExtensionProtocolOptions()) {
		if key != httpProtocolOptions {
			return nil, fmt.Errorf("typed_extension_protocol_options[%q] is %w", key, errNotImplemented)
		}
		var po upstreamhttpv3.HttpProtocolOptions
		if err := unpack(cl.GetTypedExtensionProtocolOptions()[key], &po); err != nil {
			return nil, fmt.Errorf("typed_extension_protocol_options[%q]: %w", key, err)
		}
		if po.GetExplicitHttpConfig() == nil {
			return nil, fmt.Errorf("typed_extension_protocol_options[%q]: explicit_http_config is required", key)
		}
		out.http2 = po.GetExplicitHttpConfig().GetHttp2ProtocolOptions() != nil
	}
	return out, nil
}

func breakers(cb *clusterv3.CircuitBreakers, out *breakerLimits) error {
	seen := false
	for i, t := range cb.GetThresholds() {
		if t.GetPriority() != corev3.RoutingPriority_DEFAULT {
			return fmt.Errorf("thresholds[%d].priority %s: only DEFAULT is implemented by the stand-in", i, t.GetPriority())
		}
		if seen {
			return fmt.Errorf("thresholds[%d]: a second DEFAULT threshold", i)
		}
		seen = true
		setUint32(t.GetMaxConnections(), &out.maxConnections)
		setUint32(t.GetMaxPendingRequests(), &out.maxPending)
		setUint32(t.GetMaxRequests(), &out.maxRequests)
		setUint32(t.GetMaxRetries(), &out.maxRetries)
	}
	return nil
}

// setUint32 sets *dst to v's value when v is set.
func setUint32(v *wrapperspb.UInt32Value, dst *int) {
	if v != nil {
		*dst = int(v.GetValue())
	}
}

// assignment is a compiled ClusterLoadAssignment: the addresses Envoy would
// balance over (endpoints whose health is neither UNKNOWN nor HEALTHY are
// left out, as Envoy leaves them out of the healthy set).
type assignment struct {
	name  string
	addrs []string // host:port
}

func (c *compiler) assignment(cla *endpointv3.ClusterLoadAssignment) (*assignment, error) {
	if err := c.allow.check(cla.ProtoReflect(), ""); err != nil {
		return nil, err
	}
	out := &assignment{name: cla.GetClusterName()}
	for i, loc := range cla.GetEndpoints() {
		for j, lb := range loc.GetLbEndpoints() {
			sa := lb.GetEndpoint().GetAddress().GetSocketAddress()
			if sa == nil || sa.GetAddress() == "" || sa.GetPortValue() == 0 || sa.GetPortValue() > 65535 {
				return nil, fmt.Errorf("endpoints[%d].lb_endpoints[%d].endpoint.address.socket_address: address and port_value are required", i, j)
			}
			switch lb.GetHealthStatus() {
			case corev3.HealthStatus_UNKNOWN, corev3.HealthStatus_HEALTHY:
				out.addrs = append(out.addrs, net.JoinHostPort(sa.GetAddress(), strconv.Itoa(int(sa.GetPortValue()))))
			}
		}
	}
	return out, nil
}
