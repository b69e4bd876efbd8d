package ratelimit

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/leakytokens/leaky/internal/policy"
	providersstub "github.com/leakytokens/leaky/providers-stub"
)

// quotaPolicy is the example policy with a daily quota of 1000 tokens for
// the free tier and a monthly one for organisations (UTC).
const quotaPolicy = `
quotas:
  time_zone: UTC
  tiers:
    free: {"*": {allowance: 1000, window: day}}
  organisations: {"*": {allowance: 5000, window: month}}
`

// examplePolicyWith writes the example policy with its quotas section
// replaced by quotas ("" = none) into a new directory and returns it.
func examplePolicyWith(t *testing.T, quotas string) string {
	t.Helper()
	var out []string
	skip := false
	for _, line := range strings.SplitAfter(string(policy.Example()), "\n") {
		top := line != "" && line[0] != ' ' && line[0] != '#' && line[0] != '\n'
		if top {
			skip = strings.HasPrefix(line, "quotas:")
		}
		if !skip {
			out = append(out, line)
		}
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "policy.yaml"), []byte(strings.Join(out, "")+quotas), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// TestTokensQuotaWithPolicy needs QUOTA's part (the policy's quotas, the
// store's Quota items, quota charges in Service.Reserve): the quota
// answers, a quota refusal (402, nothing charged) and a purchase lifting
// it.
func TestTokensQuotaWithPolicy(t *testing.T) {
	dir := examplePolicyWith(t, quotaPolicy)
	e := startTokens(t, providersstub.Knobs{Usage: providersstub.UsageMissing}, func(c *Config) { c.ConfigPath = dir })
	user := uuid.NewString()
	tok := e.token(t, user, []string{"USER"}, "acme")
	a := e.do(t, "GET", "/api/v1/tokens/quota?userId="+user+"&provider=openai", tok, "")
	m := a.json(t)
	midnight := time.Now().UTC().Truncate(24 * time.Hour).Add(24 * time.Hour)
	reset, _ := time.Parse(time.RFC3339Nano, m["resetTime"].(string))
	if a.status != 200 || m["totalTokens"] != float64(1000) || m["remainingTokens"] != float64(1000) || reset.Sub(midnight).Abs() > time.Minute {
		t.Fatalf("quota: %d %s (reset %v, want %v)", a.status, a.body, reset, midnight)
	}
	consume := func(n string) answer {
		return e.do(t, "POST", "/api/v1/tokens/consume", tok, `{"userId":"`+user+`","provider":"openai","tokens":`+n+`}`)
	}
	if a := consume("800"); a.status != 200 || a.json(t)["quota"].(map[string]any)["remainingTokens"] != float64(200) {
		t.Fatalf("consume 800: %d %s", a.status, a.body)
	}
	before := e.userRemaining(t, user)
	a = consume("300")
	if a.status != 402 || a.json(t)["message"] != "insufficient token quota" {
		t.Fatalf("consume 300: %d %s, want 402", a.status, a.body)
	}
	if after := e.userRemaining(t, user); after < before {
		t.Fatalf("a quota refusal charged the bucket: %d → %d", before, after)
	}
	if a := e.do(t, "POST", "/api/v1/tokens/purchase", tok, `{"userId":"`+user+`","provider":"openai","tokens":500}`); a.status != 202 {
		t.Fatalf("purchase: %d %s", a.status, a.body)
	}
	if a := consume("300"); a.status != 200 {
		t.Fatalf("consume after purchase: %d %s", a.status, a.body)
	}
	a = e.do(t, "GET", "/api/v1/tokens/quota/org?orgId=acme&provider=openai", tok, "")
	if m := a.json(t); a.status != 200 || m["totalTokens"] != float64(5000) || m["orgId"] != "acme" {
		t.Fatalf("org quota: %d %s", a.status, a.body)
	}
}
