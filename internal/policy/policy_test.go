package policy

import (
	"strings"
	"testing"
)

func TestExampleIsValid(t *testing.T) {
	p, err := Parse("example.yaml", Example())
	if err != nil {
		t.Fatalf("Parse(example) = %v", err)
	}
	if p.FailureMode != FailDeny || p.DefaultTier != "free" || len(p.Tiers) != 3 {
		t.Errorf("example = %+v", p)
	}
	if b, ok := p.UserBucket("free", "openai"); !ok || b.Capacity != 4000 {
		t.Errorf("free/openai = %+v %v, want capacity 4000", b, ok)
	}
	if b, ok := p.UserBucket("free", "gemini"); !ok || b.Capacity != 2000 {
		t.Errorf("free/gemini = %+v %v, want the wildcard's 2000", b, ok)
	}
	if _, ok := p.ProviderBucket("mistral"); ok {
		t.Error("mistral has a provider pool, want none")
	}
}

func TestTierFor(t *testing.T) {
	p, _ := Parse("example.yaml", Example())
	tests := []struct {
		roles []string
		want  string
	}{
		{nil, "free"},
		{[]string{"USER"}, "free"},
		{[]string{"user", "admin"}, "admin"},
		{[]string{"PRO", "USER"}, "pro"},
		{[]string{"unknown"}, "free"},
	}
	for _, tt := range tests {
		if got := p.TierFor(tt.roles); got != tt.want {
			t.Errorf("TierFor(%v) = %q, want %q", tt.roles, got, tt.want)
		}
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct{ name, yaml, want string }{
		{"empty", "", "empty policy"},
		{"unknown key", "domain: leaky-tokens\ncolour: blue\n", "colour"},
		{"wrong domain", "domain: other\ndefault_tier: a\ntiers: {a: {}}\n", `domain "other"`},
		{"no tiers", "domain: leaky-tokens\n", "at least one tier"},
		{"bad default", "tiers: {a: {}}\ndefault_tier: b\n", `default_tier "b"`},
		{"bad failure mode", "tiers: {a: {}}\ndefault_tier: a\nfailure_mode: maybe\n", "failure_mode"},
		{"zero capacity", "tiers: {a: {buckets: {x: {capacity: 0, leak_rate: 1}}}}\ndefault_tier: a\n", "tiers.a.buckets.x.capacity 0"},
		{"negative rate", "tiers: {a: {}}\ndefault_tier: a\nproviders: {x: {capacity: 1, leak_rate: -1}}\n", "providers.x.leak_rate -1"},
		{"bad duration", "tiers: {a: {}}\ndefault_tier: a\nreservation_ttl: soon\n", "soon"},
		{"same role twice at one priority", "tiers: {a: {roles: [X]}, b: {roles: [x]}}\ndefault_tier: a\n", `role "x"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("p.yaml", []byte(tt.yaml))
			if err == nil || !strings.HasPrefix(err.Error(), "p.yaml: ") || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Parse = %v, want an error naming p.yaml and %q", err, tt.want)
			}
		})
	}
}

func TestParseReportsEveryProblem(t *testing.T) {
	_, err := Parse("p.yaml", []byte("tiers: {a: {}}\ndefault_tier: b\nfailure_mode: maybe\n"))
	if err == nil || !strings.Contains(err.Error(), "default_tier") || !strings.Contains(err.Error(), "failure_mode") {
		t.Errorf("Parse = %v, want both problems", err)
	}
}
