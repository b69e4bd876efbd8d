package ratelimit

import (
	"github.com/leakytokens/leaky/internal/policy"
	"github.com/leakytokens/leaky/internal/xdsconfig"
)

// newSubscriber builds the -config-xds subscriber: the Runtime of our
// control plane and envoyproxy/ratelimit's RateLimitConfig resources on
// one ADS stream, as node cfg.XDSNodeID (or ratelimit-<host>-<pid>), over
// TLS when cfg.XDSTLSCA is set. Until a Runtime arrives the
// RateLimitConfigs are added to start, the configuration the service
// started on (Envoy Gateway never sends a Runtime). Every configuration
// goes through applyConfig, the file watcher's path: a duplicate domain
// is refused (or merged) there as in files.
func (s *Service) newSubscriber(start *policy.Snapshot) (*xdsconfig.Subscriber, error) {
	node := xdsconfig.NodeFor("ratelimit")
	if s.cfg.XDSNodeID != "" {
		node.ID = s.cfg.XDSNodeID
	}
	return xdsconfig.New(s.cfg.ConfigXDS, s.applyConfig, xdsconfig.Options{
		Node: node, Logger: s.log, Registerer: s.metrics.reg, TLS: s.cfg.xdsTLS(),
		RateLimitConfigs: true, Start: start.Files(),
	})
}

// xdsTLS is the -config-xds TLS files, nil when no -xds-tls-* flag is set
// (plain gRPC).
func (c Config) xdsTLS() *xdsconfig.TLSFiles {
	t := xdsconfig.TLSFiles{CA: c.XDSTLSCA, Cert: c.XDSTLSCert, Key: c.XDSTLSKey, ServerName: c.XDSTLSServerName}
	if t == (xdsconfig.TLSFiles{}) {
		return nil
	}
	return &t
}
