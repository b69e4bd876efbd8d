package ratelimit

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/leakytokens/leaky/internal/policy"
	"github.com/leakytokens/leaky/internal/xdsconfig/xdstest"
)

// examplePolicy is the example policy with the free tier's openai bucket
// at capacity, as one file.
func examplePolicy(capacity string) map[string]string {
	return map[string]string{"policy.yaml": strings.Replace(string(policy.Example()),
		"openai: {capacity: 4000,", "openai: {capacity: "+capacity+",", 1)}
}

// freeOpenAILimit is the limit the service reports for a free user's
// openai bucket (asking for no tokens).
func freeOpenAILimit(t *testing.T, s *server) uint32 {
	t.Helper()
	r := s.ask(t, "leaky-tokens", 1, withHits(desc("provider=openai,tier=free,user=xds"), 0))
	return r.Statuses[0].GetCurrentLimit().GetRequestsPerUnit()
}

// With -config-xds the service starts on its configuration path (the
// embedded example here), takes each configuration the control plane
// pushes, keeps the last good one through an invalid push and through the
// control plane's absence, and follows a restarted control plane.
func TestConfigFromXDS(t *testing.T) {
	ads := xdstest.Start(t, "127.0.0.1:0")
	cfg := testConfig(t, "memory")
	cfg.ConfigXDS = ads.Addr
	s := start(t, cfg)
	if got := freeOpenAILimit(t, s); got != 4000 {
		t.Fatalf("limit before any xDS configuration = %d, want the embedded example's 4000", got)
	}
	if code, body := httpGet(t, "http://"+s.svc.HTTPAddr()+"/readyz"); code != 200 || !strings.Contains(body, "no configuration from the control plane") {
		t.Errorf("/readyz before any xDS configuration = %d %s; want 200, degraded, saying so", code, body)
	}

	pushed := time.Now()
	ads.SetFiles(t, "v1", examplePolicy("4321"))
	eventually(t, "the pushed capacity", func() bool { return freeOpenAILimit(t, s) == 4321 })
	if _, body := httpGet(t, "http://"+s.svc.HTTPAddr()+"/readyz"); strings.Contains(body, "no configuration from the control plane") {
		t.Errorf("/readyz after the first xDS configuration still says none came: %s", body)
	}
	t.Logf("a tier change pushed over xDS decided requests %v after it was set", time.Since(pushed))
	ads.WaitRequest(t, "the ACK of v1", xdstest.ACK("v1"))

	ads.SetFiles(t, "v2", examplePolicy("-5"))
	nack := ads.WaitRequest(t, "the NACK of v2", xdstest.NACK("capacity"))
	if nack.GetVersionInfo() != "v1" {
		t.Errorf("NACK version_info = %q, want the applied v1", nack.GetVersionInfo())
	}
	if got := freeOpenAILimit(t, s); got != 4321 {
		t.Errorf("limit after an invalid push = %d, want the last good 4321", got)
	}

	ads.Stop()
	eventually(t, "the subscription seen closed", func() bool {
		_, body := httpGet(t, "http://"+s.svc.HTTPAddr()+"/metrics")
		return strings.Contains(body, "leaky_xds_config_connected 0")
	})
	if got := freeOpenAILimit(t, s); got != 4321 {
		t.Errorf("limit while the control plane is down = %d, want 4321", got)
	}

	next := xdstest.Start(t, ads.Addr)
	next.SetFiles(t, "v3", examplePolicy("5555"))
	eventually(t, "the restarted control plane's capacity", func() bool { return freeOpenAILimit(t, s) == 5555 })

	_, body := httpGet(t, "http://"+s.svc.HTTPAddr()+"/metrics")
	for _, want := range []string{`leaky_xds_config_updates_total{result="applied"} 2`, `leaky_xds_config_updates_total{result="rejected"} 1`,
		`leaky_xds_config_applied_info{version="v3"} 1`} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}

// With -config-xds the configuration path is read at start and not
// watched: one source at a time.
func TestConfigXDSTurnsTheFileWatcherOff(t *testing.T) {
	ads := xdstest.Start(t, "127.0.0.1:0")
	cfg := testConfig(t, "memory", "policy.yaml")
	cfg.ConfigXDS = ads.Addr
	s := start(t, cfg)
	if got := limitOf(t, s); got != 1000 {
		t.Fatalf("limit = %d, want the file's 1000 before any xDS configuration", got)
	}
	file := filepath.Join(cfg.ConfigPath, "policy.yaml")
	orig, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	replaceFile(t, file, strings.Replace(string(orig), `"*": {capacity: 1000,`, `"*": {capacity: 1234,`, 1))
	// Twenty reload intervals: a watcher would have read the change.
	time.Sleep(20 * cfg.ReloadInterval)
	if got := limitOf(t, s); got != 1000 {
		t.Errorf("limit after a file edit = %d, want 1000: the file is not watched with -config-xds", got)
	}
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

// The one apply path ignores a snapshot with the digest of the serving one
// (the same files from another source included).
func TestApplySameDigestIsNoOp(t *testing.T) {
	s := start(t, testConfig(t, "memory"))
	files := map[string][]byte{"policy.yaml": []byte(examplePolicy("4100")["policy.yaml"])}
	first, err := policy.FromContents("xds a", files)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.svc.applyConfig(first); err != nil {
		t.Fatalf("applyConfig: %v", err)
	}
	serving := s.svc.limits.Load()
	again, err := policy.FromContents("xds b", files)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.svc.applyConfig(again); err != nil || s.svc.limits.Load() != serving {
		t.Errorf("applyConfig(same digest) = %v and a new configuration installed; want nil and no change", err)
	}
}
