package ratelimit

import (
	"strings"
	"testing"

	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	rlconfv3 "github.com/envoyproxy/go-control-plane/ratelimit/config/ratelimit/v3"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/leakytokens/leaky/internal/xdsconfig/xdstest"
)

func rlsLimit(key, value string, n uint32, children ...*rlconfv3.RateLimitDescriptor) *rlconfv3.RateLimitDescriptor {
	d := &rlconfv3.RateLimitDescriptor{Key: key, Value: value, Descriptors: children}
	if n > 0 {
		d.RateLimit = &rlconfv3.RateLimitPolicy{Unit: rlconfv3.RateLimitUnit_MINUTE, RequestsPerUnit: n}
	}
	return d
}

func rlsConfig(name, domain string, ds ...*rlconfv3.RateLimitDescriptor) *rlconfv3.RateLimitConfig {
	return &rlconfv3.RateLimitConfig{Name: name, Domain: domain, Descriptors: ds}
}

// limitFor is the requests_per_unit the service reports for one
// descriptor kv of domain (0: no limit applies).
func limitFor(t *testing.T, s *server, domain, kv string) uint32 {
	t.Helper()
	return s.ask(t, domain, 0, desc(kv)).Statuses[0].GetCurrentLimit().GetRequestsPerUnit()
}

// RateLimitConfig resources from a go-control-plane snapshot server decide
// requests on the generated RateLimitService client: the first set, an
// update, two domains, a deeper tree, a removed resource gone, a broken
// set NACKed while the last good one decides, a domain in two resources
// refused.
func TestRateLimitConfigsFromXDS(t *testing.T) {
	ads := xdstest.Start(t, "127.0.0.1:0")
	cfg := testConfig(t, "memory")
	cfg.ConfigXDS = ads.Addr
	s := start(t, cfg)

	ads.SetRateLimitConfigs(t, "1", rlsConfig("foo", "foo", rlsLimit("k", "", 2)))
	eventually(t, "domain foo", func() bool { return limitFor(t, s, "foo", "k=v") == 2 })
	if r := s.ask(t, "foo", 1, desc("k=a")); r.GetOverallCode() != rlsv3.RateLimitResponse_OK {
		t.Fatalf("first request of two per minute = %v, want OK", r.GetOverallCode())
	}
	r := s.ask(t, "foo", 1, desc("k=a"))
	if r.GetOverallCode() != rlsv3.RateLimitResponse_OK {
		t.Fatalf("second request of two per minute = %v, want OK", r.GetOverallCode())
	}
	if r = s.ask(t, "foo", 1, desc("k=a")); r.GetOverallCode() != rlsv3.RateLimitResponse_OVER_LIMIT {
		t.Errorf("third request of two per minute = %v, want OVER_LIMIT", r.GetOverallCode())
	}
	if got := freeOpenAILimit(t, s); got != 4000 {
		t.Errorf("the start policy beside the RateLimitConfigs: limit %d, want 4000", got)
	}

	ads.SetRateLimitConfigs(t, "2", rlsConfig("foo", "foo", rlsLimit("k", "", 7)),
		rlsConfig("bar", "bar", rlsLimit("route", "r1", 0,
			rlsLimit("method", "GET", 0, rlsLimit("user", "", 3)))))
	eventually(t, "the update and domain bar", func() bool {
		return limitFor(t, s, "foo", "k=v") == 7 && limitFor(t, s, "bar", "route=r1,method=GET,user=u") == 3
	})
	if got := limitFor(t, s, "bar", "route=r1,method=POST,user=u"); got != 0 {
		t.Errorf("bar, another method: limit %d, want none", got)
	}

	ads.SetRateLimitConfigs(t, "3", rlsConfig("bar", "bar", rlsLimit("route", "r1", 0,
		rlsLimit("method", "GET", 0, rlsLimit("user", "", 3)))))
	eventually(t, "foo gone", func() bool { return limitFor(t, s, "foo", "k=v") == 0 })
	ads.WaitRequest(t, "the ACK of 3", xdstest.ACK("3"))

	broken := rlsConfig("baz", "baz", rlsLimit("k", "", 1))
	broken.Descriptors[0].RateLimit.Unit = rlconfv3.RateLimitUnit_UNKNOWN
	ads.SetRateLimitConfigs(t, "4", broken)
	nack := ads.WaitRequest(t, "the NACK of 4", xdstest.NACK("invalid rate limit unit 'UNKNOWN'"))
	if nack.GetVersionInfo() != "3" {
		t.Errorf("NACK version_info = %q, want 3", nack.GetVersionInfo())
	}
	if got := limitFor(t, s, "bar", "route=r1,method=GET,user=u"); got != 3 {
		t.Errorf("after the NACK: bar's limit %d, want the last good 3", got)
	}

	ads.SetRateLimitConfigs(t, "5", rlsConfig("foo-1", "foo", rlsLimit("k", "", 1)), rlsConfig("foo-2", "foo", rlsLimit("j", "", 1)))
	ads.WaitRequest(t, "the NACK of 5", xdstest.NACK("RateLimitConfig/foo-2: duplicate domain 'foo' in config file"))
	if got := limitFor(t, s, "foo", "k=v"); got != 0 {
		t.Errorf("after the duplicate domain: foo's limit %d, want none (3 serving)", got)
	}
	_, body := httpGet(t, "http://"+s.svc.HTTPAddr()+"/metrics")
	if !strings.Contains(body, `leaky_xds_ratelimitconfig_applied_info{version="3"} 1`) {
		t.Errorf("/metrics lacks the applied RateLimitConfig version 3")
	}
}

// Envoy Gateway's shape: an ADS server over mutual TLS answering node
// envoy-ratelimit only, sending no Runtime, one RateLimitConfig per
// domain named after it with its route, rule-match tree.
func TestEnvoyGatewayShape(t *testing.T) {
	pki := xdstest.NewPKI(t)
	ads := xdstest.StartWith(t, "127.0.0.1:0", xdstest.Options{NodeID: "envoy-ratelimit", TLS: pki.ServerTLS()})
	domain := "default/eg/http"
	ads.SetRateLimitConfigs(t, "1", rlsConfig(domain, domain,
		rlsLimit("httproute/default/backend/rule/0/match/0/example-com", "httproute/default/backend/rule/0/match/0/example-com", 0,
			rlsLimit("rule-0-match-0", "", 0, rlsLimit("rule-0-method", "GET", 4)))))

	cfg := testConfig(t, "memory")
	cfg.ConfigXDS = ads.Addr
	cfg.XDSNodeID = "envoy-ratelimit"
	cfg.XDSTLSCA, cfg.XDSTLSCert, cfg.XDSTLSKey, cfg.XDSTLSServerName = pki.CAFile, pki.ClientCertFile, pki.ClientKeyFile, "localhost"
	if err := CheckConfig(cfg); err != nil {
		t.Fatalf("CheckConfig: %v", err)
	}
	s := start(t, cfg)
	kv := "httproute/default/backend/rule/0/match/0/example-com=httproute/default/backend/rule/0/match/0/example-com,rule-0-match-0=alice,rule-0-method=GET"
	eventually(t, "Envoy Gateway's domain", func() bool { return limitFor(t, s, domain, kv) == 4 })
	ads.WaitRequest(t, "the ACK of 1", xdstest.ACK("1"))
	if code, body := httpGet(t, "http://"+s.svc.HTTPAddr()+"/readyz"); code != 200 || strings.Contains(body, "degraded") {
		t.Errorf("/readyz = %d %s, want ready: the RateLimitConfigs are the control plane's configuration", code, body)
	}
}

func TestXDSTLSValidated(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*Config)
		want   string
	}{
		{"cert without CA", func(c *Config) { c.XDSTLSCert, c.XDSTLSKey = "c", "k" }, "a CA file is required"},
		{"cert without key", func(c *Config) { c.XDSTLSCA, c.XDSTLSCert = "ca", "c" }, "both or neither"},
		{"unreadable CA", func(c *Config) { c.XDSTLSCA = "/nonexistent/ca.pem" }, "xds tls ca"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.ConfigXDS = "localhost:18000"
			tt.mutate(&cfg)
			if err := CheckConfig(cfg); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("CheckConfig = %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

// With -merge-domain-config two RateLimitConfig resources of one domain
// merge (envoyproxy/ratelimit's MERGE_DOMAIN_CONFIG over xDS), a key in
// both is NACKed naming the later resource, and a descriptor's metadata
// reaches the answer's dynamic_metadata with -response-dynamic-metadata.
func TestRateLimitConfigsMergeAndMetadataFromXDS(t *testing.T) {
	ads := xdstest.Start(t, "127.0.0.1:0")
	cfg := testConfig(t, "memory")
	cfg.ConfigXDS, cfg.MergeDomainConfig, cfg.ResponseDynamicMetadata = ads.Addr, true, true
	s := start(t, cfg)

	k := rlsLimit("k", "", 1)
	meta, err := structpb.NewStruct(map[string]any{"name": "svc1", "nested": map[string]any{"n": 2}})
	if err != nil {
		t.Fatal(err)
	}
	k.Metadata = meta
	ads.SetRateLimitConfigs(t, "1", rlsConfig("foo-1", "foo", k), rlsConfig("foo-2", "foo", rlsLimit("j", "", 2)))
	eventually(t, "both files of domain foo", func() bool {
		return limitFor(t, s, "foo", "k=v") == 1 && limitFor(t, s, "foo", "j=v") == 2
	})
	r := s.ask(t, "foo", 1, desc("k=a"))
	got := r.GetDynamicMetadata().AsMap()["metadata"]
	if diff := cmp.Diff(map[string]any{"name": "svc1", "nested": map[string]any{"n": 2.0}}, got); diff != "" {
		t.Errorf("dynamic_metadata.metadata (-want +got):\n%s", diff)
	}

	ads.SetRateLimitConfigs(t, "2", rlsConfig("foo-1", "foo", rlsLimit("k", "", 1)), rlsConfig("foo-2", "foo", rlsLimit("k", "", 3)))
	ads.WaitRequest(t, "the NACK of 2", xdstest.NACK("RateLimitConfig/foo-2"))
	ads.WaitRequest(t, "the NACK of 2 names the key", xdstest.NACK("duplicate descriptor composite key 'foo.k'"))
	if got := limitFor(t, s, "foo", "j=v"); got != 2 {
		t.Errorf("after the NACK: j's limit %d, want the last good 2", got)
	}
}
