package controlplane

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/leakytokens/leaky/internal/policy"
)

func TestSetTier(t *testing.T) {
	tier := Tier{Priority: 5, Roles: []string{"A", "B"}, Buckets: map[string]Bucket{"*": {100, 0.5}, "openai": {2000000, 1000000}}}
	tests := []struct {
		name    string
		doc     string
		tier    string
		want    string // the whole document written
		wantErr string
	}{
		{"replace, keeping the key's comments and the blank lines",
			"a: 1 # one\n\n# the tiers\ntiers:\n  # gold is best\n  gold:\n    priority: 1 # low\n    buckets:\n      \"*\": {capacity: 1, leak_rate: 1} # all\n  free: {priority: 0}\n\nb: 2\n",
			"gold",
			"a: 1 # one\n\n# the tiers\ntiers:\n  # gold is best\n  gold:\n    priority: 5 # low\n    roles: [A, B]\n    buckets:\n      \"*\": {capacity: 100, leak_rate: 0.5} # all\n      openai: {capacity: 2000000, leak_rate: 1000000}\n  free: {priority: 0}\n\nb: 2\n", ""},
		{"create after the others",
			"tiers:\n  free: {priority: 0}\n", "gold",
			"tiers:\n  free: {priority: 0}\n  gold:\n    priority: 5\n    roles: [A, B]\n    buckets:\n      \"*\": {capacity: 100, leak_rate: 0.5}\n      openai: {capacity: 2000000, leak_rate: 1000000}\n", ""},
		{"no tiers yet", "domain: x\n", "gold",
			"domain: x\ntiers:\n  gold:\n    priority: 5\n    roles: [A, B]\n    buckets:\n      \"*\": {capacity: 100, leak_rate: 0.5}\n      openai: {capacity: 2000000, leak_rate: 1000000}\n", ""},
		{"tiers not a mapping", "tiers: [a]\n", "gold", "", "tiers: not a mapping"},
		{"not a mapping", "- a\n", "gold", "", "not a YAML mapping"},
		{"not YAML", "a: [\n", "gold", "", "read the policy"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := setTier([]byte(tt.doc), tt.tier, tier)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("setTier() = %q, %v, want an error containing %q", got, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, string(got)); diff != "" {
				t.Errorf("setTier() (-want +got):\n%s", diff)
			}
		})
	}
}

// Every tier of the example, written back unchanged, leaves a policy
// equal to the example (only spacing may differ).
func TestSetTierRoundTrip(t *testing.T) {
	doc := policy.Example()
	want, err := policy.Parse("example", doc)
	if err != nil {
		t.Fatal(err)
	}
	for name, tier := range tiersOf(want) {
		if doc, err = setTier(doc, name, tier); err != nil {
			t.Fatal(err)
		}
	}
	got, err := policy.Parse("rewritten", doc)
	if err != nil {
		t.Fatalf("the rewritten example: %v\n%s", err, doc)
	}
	if diff := cmp.Diff(tiersOf(want), tiersOf(got)); diff != "" {
		t.Errorf("tiers after writing each back (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(comments(string(policy.Example())), comments(string(doc))); diff != "" {
		t.Errorf("comments (-want +got):\n%s", diff)
	}
	if a, b := strings.Count(string(policy.Example()), "\n\n"), strings.Count(string(doc), "\n\n"); a != b {
		t.Errorf("blank lines: %d in the example, %d rewritten", a, b)
	}
}
