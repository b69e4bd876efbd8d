package authz

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/leakytokens/leaky/internal/contract"
	"github.com/leakytokens/leaky/internal/policy"
	"github.com/leakytokens/leaky/internal/xdsconfig/xdstest"
)

// proForUsers is the example policy with role USER moved from tier free
// to tier pro.
func proForUsers() map[string]string {
	pol := strings.Replace(string(policy.Example()), "roles: [USER]", "roles: [NOBODY]", 1)
	return map[string]string{"policy.yaml": strings.Replace(pol, "roles: [PRO]", "roles: [PRO, USER]", 1)}
}

// With -config-xds authz starts on its policy path (the embedded example
// here), takes each policy the control plane pushes, keeps the last good
// one through an invalid push and through the control plane's absence, and
// follows a restarted control plane.
func TestPolicyFromXDS(t *testing.T) {
	ads := xdstest.Start(t, "127.0.0.1:0")
	ts := startService(t, nil, func(c *Config) { c.ConfigXDS = ads.Addr })
	u := ts.register(t, "xds")
	tier := func() string {
		return okHeaders(ts.check(t, "/openai/x", map[string]string{"authorization": "Bearer " + u.Token}, ""))[contract.HeaderTier]
	}
	if got := tier(); got != "free" {
		t.Fatalf("tier before any xDS policy = %q, want free (the embedded example)", got)
	}

	pushed := time.Now()
	ads.SetFiles(t, "v1", proForUsers())
	waitFor(t, "the pushed tier mapping", func() bool { return tier() == "pro" })
	t.Logf("a role mapping pushed over xDS decided Checks %v after it was set", time.Since(pushed))
	ads.WaitRequest(t, "the ACK of v1", xdstest.ACK("v1"))

	ads.SetFiles(t, "v2", map[string]string{"policy.yaml": "domain: leaky-tokens\ndefault_tier: gold\n"})
	nack := ads.WaitRequest(t, "the NACK of v2", xdstest.NACK(`default_tier "gold"`))
	if nack.GetVersionInfo() != "v1" {
		t.Errorf("NACK version_info = %q, want the applied v1", nack.GetVersionInfo())
	}
	if got := tier(); got != "pro" {
		t.Errorf("tier after an invalid push = %q, want the last good pro", got)
	}
	// A configuration without the policy (only another domain) is refused
	// by authz, which needs the tiers.
	ads.SetFiles(t, "v3", map[string]string{"rl.yaml": "domain: other\ndescriptors: []\n"})
	ads.WaitRequest(t, "the NACK of v3", xdstest.NACK("holds no file with domain leaky-tokens"))

	ads.Stop()
	waitFor(t, "the subscription seen closed", func() bool { return strings.Contains(ts.metricsText(t), "leaky_xds_config_connected 0") })
	if got := tier(); got != "pro" {
		t.Errorf("tier while the control plane is down = %q, want pro", got)
	}

	next := xdstest.Start(t, ads.Addr)
	next.SetFiles(t, "v4", map[string]string{"policy.yaml": string(policy.Example())})
	waitFor(t, "the restarted control plane's policy", func() bool { return tier() == "free" })
	if !strings.Contains(ts.metricsText(t), `leaky_xds_config_applied_info{version="v4"} 1`) {
		t.Errorf("/metrics lacks the applied version v4")
	}
	if strings.Contains(ts.logs.String(), "roles: [PRO, USER]") {
		t.Errorf("the policy text reached the log")
	}
}

func (ts *testService) metricsText(t *testing.T) string {
	t.Helper()
	resp, err := http.Get(ts.base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestConfigXDSValidated(t *testing.T) {
	for _, addr := range []string{"controlplane", "127.0.0.1:0", ":18000", "127.0.0.1:99999"} {
		cfg := DefaultConfig()
		cfg.ConfigXDS = addr
		if err := CheckConfig(cfg); err == nil || !strings.Contains(err.Error(), "config-xds") {
			t.Errorf("CheckConfig(-config-xds %q) = %v, want a config-xds error", addr, err)
		}
	}
	cfg := DefaultConfig()
	cfg.ConfigXDS = "localhost:18000"
	if err := CheckConfig(cfg); err != nil {
		t.Errorf("CheckConfig(-config-xds localhost:18000) = %v, want nil", err)
	}
}

// The one apply path ignores a snapshot with the digest of the one applied
// last (the same files from another source included).
func TestApplySameDigestIsNoOp(t *testing.T) {
	ts := startService(t, nil, nil)
	files := map[string][]byte{"policy.yaml": []byte(proForUsers()["policy.yaml"])}
	first, err := policy.FromContents("xds a", files)
	if err != nil {
		t.Fatal(err)
	}
	if err := ts.applyPolicy(first); err != nil {
		t.Fatalf("applyPolicy: %v", err)
	}
	serving := ts.policy.Load()
	again, err := policy.FromContents("xds b", files)
	if err != nil {
		t.Fatal(err)
	}
	if err := ts.applyPolicy(again); err != nil || ts.policy.Load() != serving {
		t.Errorf("applyPolicy(same digest) = %v and a new policy installed; want nil and no change", err)
	}
}
