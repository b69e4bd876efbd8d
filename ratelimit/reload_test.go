package ratelimit

import (
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"

	"github.com/leakytokens/leaky/ratelimit/rules"
)

func limitOf(t *testing.T, s *server) uint32 {
	t.Helper()
	r := s.ask(t, "leaky-tokens", 1, withHits(desc("provider=openai,tier=free,user=reload"), 0))
	return r.Statuses[0].GetCurrentLimit().GetRequestsPerUnit()
}

func TestReloadAppliesChangesAndKeepsLastGood(t *testing.T) {
	cfg := testConfig(t, "memory", "policy.yaml")
	s := start(t, cfg)
	file := filepath.Join(cfg.ConfigPath, "policy.yaml")
	orig, _ := os.ReadFile(file)
	if got := limitOf(t, s); got != 1000 {
		t.Fatalf("limit = %d, want 1000", got)
	}

	changed := strings.Replace(string(orig), `"*": {capacity: 1000,`, `"*": {capacity: 1234,`, 1)
	replaceFile(t, file, changed)
	eventually(t, "the new capacity", func() bool { return limitOf(t, s) == 1234 })

	// A bad file is rejected, counted, and the last good one keeps serving.
	bad := strings.Replace(changed, "leak_rate: 0.001}", "leak_rate: -1}", 1)
	replaceFile(t, file, bad)
	eventually(t, "the load error metric", func() bool {
		_, body := httpGet(t, "http://"+s.svc.HTTPAddr()+"/metrics")
		return strings.Contains(body, "ratelimit_service_config_load_error 1")
	})
	if got := limitOf(t, s); got != 1234 {
		t.Errorf("after a bad file: limit = %d, want the last good 1234", got)
	}

	// A removed file is an error too; the last good configuration stays.
	// A poll between the two steps may count one more error (the empty
	// directory), so the count is compared with at least.
	if err := os.Remove(file); err != nil {
		t.Fatal(err)
	}
	replaceFile(t, filepath.Join(cfg.ConfigPath, "messaging.yaml"), "domain: [unclosed")
	eventually(t, "the second load error", func() bool { return loadErrors(t, s) >= 2 })
	if got := limitOf(t, s); got != 1234 {
		t.Errorf("after a broken directory: limit = %d, want 1234", got)
	}
	if r := s.ask(t, "leaky-tokens", 1, desc("provider=openai,tier=free,user=x")); r.OverallCode != rlsv3.RateLimitResponse_OK {
		t.Errorf("still serving: %v", r.OverallCode)
	}
}

// loadErrors reads ratelimit_service_config_load_error from /metrics.
func loadErrors(t *testing.T, s *server) float64 {
	t.Helper()
	_, body := httpGet(t, "http://"+s.svc.HTTPAddr()+"/metrics")
	for line := range strings.Lines(body) {
		if v, ok := strings.CutPrefix(line, "ratelimit_service_config_load_error "); ok {
			n, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil {
				t.Fatalf("metric line %q: %v", line, err)
			}
			return n
		}
	}
	t.Fatalf("no ratelimit_service_config_load_error in /metrics:\n%s", body)
	return 0
}

// replaceFile writes path by renaming a finished file over it, so that no
// poll reads it half written.
func replaceFile(t *testing.T, path, content string) {
	t.Helper()
	tmp := filepath.Join(filepath.Dir(path), ".tmp")
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// Files reached through symbolic links are read (a Kubernetes ConfigMap
// mount); a directory without configuration files is an error.
func TestConfigDirectoryLayouts(t *testing.T) {
	dir := t.TempDir()
	data := filepath.Join(dir, "..data")
	if err := os.Mkdir(data, 0o755); err != nil {
		t.Fatal(err)
	}
	orig, _ := os.ReadFile("testdata/policy.yaml")
	if err := os.WriteFile(filepath.Join(data, "policy.yaml"), orig, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("..data/policy.yaml", filepath.Join(dir, "policy.yaml")); err != nil {
		t.Fatal(err)
	}
	l, err := loadLimits(dir, rules.Options{})
	if err != nil || l.policy == nil {
		t.Fatalf("loadLimits(symlinked) = %v, %v; want the policy", l, err)
	}
	if _, err := loadLimits(t.TempDir(), rules.Options{}); err == nil || !strings.Contains(err.Error(), "no *.yaml") {
		t.Errorf("loadLimits(empty dir) = %v, want an error", err)
	}
}

// A reload cannot silently drop the leaky-tokens policy.
func TestReloadKeepsPolicy(t *testing.T) {
	cfg := testConfig(t, "memory", "policy.yaml")
	s := start(t, cfg)
	replaceFile(t, filepath.Join(cfg.ConfigPath, "other.yaml"), "domain: other\ndescriptors:\n  - key: k\n    rate_limit: {unit: second, requests_per_unit: 1}\n")
	if err := os.Remove(filepath.Join(cfg.ConfigPath, "policy.yaml")); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the load error", func() bool {
		_, body := httpGet(t, "http://"+s.svc.HTTPAddr()+"/metrics")
		return strings.Contains(body, "ratelimit_service_config_load_error 1")
	})
	if got := limitOf(t, s); got != 1000 {
		t.Errorf("limit after the policy file went = %d, want the last good 1000", got)
	}
}

// A configuration that fails validation at start is an error naming the
// file and the problem.
func TestBadConfigAtStart(t *testing.T) {
	tests := []struct{ name, file, content, want string }{
		{"policy with unknown tier", "policy.yaml", "domain: leaky-tokens\ndefault_tier: gold\ntiers:\n  free: {buckets: {\"*\": {capacity: 1, leak_rate: 1}}}\n", `default_tier "gold": not a tier`},
		{"policy with unknown key", "policy.yaml", "domain: leaky-tokens\ndefault_tier: free\ncolour: blue\ntiers:\n  free: {}\n", "colour"},
		{"ratelimit file with bad unit", "rl.yaml", "domain: d\ndescriptors:\n  - key: k\n    rate_limit: {unit: fortnight, requests_per_unit: 1}\n", "fortnight"},
		{"ratelimit file without domain", "rl.yaml", "descriptors:\n  - key: k\n", "domain"},
		// The bucket the GCRA cannot represent is refused at load, never
		// turned into "no rule" on the request path.
		{"policy bucket beyond the algorithm", "policy.yaml", "domain: leaky-tokens\ndefault_tier: free\ntiers:\n  free: {buckets: {openai: {capacity: 4000000000000, leak_rate: 40}}}\nproviders:\n  openai: {capacity: 1, leak_rate: 1}\n",
			"tiers.free.buckets.openai: capacity 4000000000000 at leak_rate 40 cannot be represented"},
		{"policy NaN leak rate", "policy.yaml", "domain: leaky-tokens\ndefault_tier: free\ntiers:\n  free: {}\nproviders:\n  openai: {capacity: 1, leak_rate: .nan}\n", "providers.openai.leak_rate NaN"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, tt.file)
			if err := os.WriteFile(path, []byte(tt.content), 0o644); err != nil {
				t.Fatal(err)
			}
			cfg := testConfig(t, "memory")
			cfg.ConfigPath = dir
			_, err := New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), testStore(t, cfg))
			if err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("New = %v, want an error naming %s and %q", err, path, tt.want)
			}
		})
	}
}
