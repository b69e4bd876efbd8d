package authz

import (
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/leakytokens/leaky/internal/contract"
	"github.com/leakytokens/leaky/internal/policy"
)

func TestPolicyReload(t *testing.T) {
	path := t.TempDir() + "/policy.yaml"
	orig := string(policy.Example())
	if err := os.WriteFile(path, []byte(orig), 0o600); err != nil {
		t.Fatal(err)
	}
	ts := startService(t, nil, func(c *Config) { c.PolicyPath = path })
	u := ts.register(t, "tiered")
	tier := func() string {
		return okHeaders(ts.check(t, "/openai/x", map[string]string{"authorization": "Bearer " + u.Token}, ""))[contract.HeaderTier]
	}
	if got := tier(); got != "free" {
		t.Fatalf("tier = %q, want free", got)
	}
	// A broken file is rejected (and logged); the last good one serves.
	replacePolicy(t, path, "domain: [broken")
	waitFor(t, "the rejection to be logged", func() bool { return strings.Contains(ts.logs.String(), "policy reload rejected") })
	if got := tier(); got != "free" {
		t.Fatalf("tier after a broken policy = %q, want free (last good)", got)
	}
	// A policy that cannot be enforced is rejected too.
	replacePolicy(t, path, strings.Replace(orig, "openai: {capacity: 4000,", "openai: {capacity: 4000000000000,", 1))
	waitFor(t, "the unrepresentable bucket to be refused", func() bool {
		return strings.Contains(ts.logs.String(), "capacity 4000000000000 at leak_rate 40 cannot be represented")
	})
	// A good one takes effect.
	changed := strings.Replace(orig, "roles: [USER]", "roles: [NOBODY]", 1)
	changed = strings.Replace(changed, "roles: [PRO]", "roles: [PRO, USER]", 1)
	replacePolicy(t, path, changed)
	waitFor(t, "the policy change", func() bool { return tier() == "pro" })
}

// replacePolicy writes path by renaming a finished file over it, so that
// no poll reads it half written.
func replacePolicy(t *testing.T, path, content string) {
	t.Helper()
	tmp := filepath.Join(filepath.Dir(path), ".tmp")
	if err := os.WriteFile(tmp, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// waitFor polls cond for up to 30 s (the policy is polled every second,
// and the machine may be loaded).
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); !cond(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after 30s waiting for %s", what)
		}
	}
}

// The policy path may be a directory, as the ratelimit service reads it:
// authz uses the leaky-tokens policy in it and leaves the other domains to
// the ratelimit service. A directory without a policy is refused at start.
func TestPolicyDirectory(t *testing.T) {
	dir := t.TempDir()
	pol := strings.Replace(string(policy.Example()), "roles: [USER]", "roles: [NOBODY]", 1)
	pol = strings.Replace(pol, "roles: [PRO]", "roles: [PRO, USER]", 1)
	if err := os.WriteFile(filepath.Join(dir, "policy.yaml"), []byte(pol), 0o600); err != nil {
		t.Fatal(err)
	}
	other := "domain: messaging\ndescriptors:\n  - key: k\n    rate_limit: {unit: second, requests_per_unit: 1}\n"
	if err := os.WriteFile(filepath.Join(dir, "messaging.yaml"), []byte(other), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := testConfig()
	cfg.PolicyPath = dir
	svc, err := newTestService(t.Context(), cfg, slog.New(slog.DiscardHandler), testStore(t, cfg))
	if err != nil {
		t.Fatalf("New(policy directory) = %v", err)
	}
	if got := svc.policy.Load().TierFor([]string{"USER"}); got != "pro" {
		t.Errorf("tier of USER = %q, want pro from the directory's policy", got)
	}
	svc.Close()

	ts := startService(t, nil, func(c *Config) { c.PolicyPath = dir })
	u := ts.register(t, "dir")
	if got := okHeaders(ts.check(t, "/openai/x", map[string]string{"authorization": "Bearer " + u.Token}, ""))[contract.HeaderTier]; got != "pro" {
		t.Errorf("Check tier = %q, want pro from the directory's policy", got)
	}

	if err := os.Remove(filepath.Join(dir, "policy.yaml")); err != nil {
		t.Fatal(err)
	}
	_, err = newTestService(t.Context(), cfg, slog.New(slog.DiscardHandler), testStore(t, cfg))
	if err == nil || !strings.Contains(err.Error(), dir+" holds no file with domain leaky-tokens") {
		t.Errorf("New(directory without a policy) = %v, want a refusal naming %s", err, dir)
	}
	// Nor does a reload that drops the policy take effect.
	waitFor(t, "the dropped policy to be refused", func() bool { return strings.Contains(ts.logs.String(), "holds no file with domain leaky-tokens") })
}
