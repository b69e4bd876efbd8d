package rules

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

func d(entries []Entry) Descriptor { return Descriptor{Entries: entries} }

func TestResolve(t *testing.T) {
	c := mustParse(t, "testdata/modes.yaml")
	named := func(rpu uint32, u Unit, key, name string, replaces []string, entries []Entry) *Limit {
		l := lim(rpu, u, key, entries)
		l.Name, l.Replaces = name, replaces
		return l
	}
	user1 := e("key_1", "value_1", "user", "bkthomps")
	user2 := e("key_2", "value_2", "user", "bkthomps")
	tests := []struct {
		name string
		in   []Descriptor
		want []*Limit
	}{
		{"replaced limit is dropped, replacer kept", []Descriptor{d(user1), d(user2)}, []*Limit{
			nil,
			named(10, Second, "modes.key_2_value_2.user_bkthomps", "", []string{"specific_limit"}, user2),
		}},
		{"a named limit alone stays", []Descriptor{d(user1)}, []*Limit{
			named(5, Second, "modes.key_1_value_1.user_bkthomps", "specific_limit", nil, user1),
		}},
		{"order does not matter", []Descriptor{d(user2), d(user1)}, []*Limit{
			named(10, Second, "modes.key_2_value_2.user_bkthomps", "", []string{"specific_limit"}, user2),
			nil,
		}},
		{"unlimited limits are never dropped", []Descriptor{d(e("free", "x")), d(e("paid", "x")), d(e("old", "x"))}, []*Limit{
			{Unlimited: true, Name: "free_tier", FullKey: "modes.free", Counter: e("free", "x")},
			named(50, Hour, "modes.paid", "paid_tier", []string{"free_tier", "paid_tier_old"}, e("paid", "x")),
			nil,
		}},
		{"a replaced limit still replaces", []Descriptor{d(e("chain_a", "x")), d(e("chain_b", "x")), d(e("chain_c", "x"))}, []*Limit{
			named(1, Second, "modes.chain_a", "a", []string{"b"}, e("chain_a", "x")),
			nil,
			nil,
		}},
		{"descriptors without a rule and without entries", []Descriptor{d(e("nothing", "here")), d(nil)}, []*Limit{nil, nil}},
		{"override replaces the rule, keeps the counter", []Descriptor{
			{Entries: user1, Override: &Override{RequestsPerUnit: 42, Unit: Hour}},
			d(user2),
		}, []*Limit{
			{RequestsPerUnit: 42, Unit: Hour, Override: true, FullKey: "modes.key_1_value_1.user_bkthomps", Counter: user1},
			named(10, Second, "modes.key_2_value_2.user_bkthomps", "", []string{"specific_limit"}, user2),
		}},
		{"override drops shadow_mode and applies without a rule", []Descriptor{
			{Entries: e("service", "s", "user", "user-a"), Override: &Override{RequestsPerUnit: 1, Unit: Week}},
			{Entries: e("unknown", "v", "bare", ""), Override: &Override{RequestsPerUnit: 7, Unit: Year}},
		}, []*Limit{
			{RequestsPerUnit: 1, Unit: Week, Override: true, FullKey: "modes.service_s.user_user-a", Counter: e("service", "s", "user", "user-a")},
			{RequestsPerUnit: 7, Unit: Year, Override: true, FullKey: "modes.unknown_v.bare", Counter: e("unknown", "v", "bare", "")},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Resolve(c, tt.in)
			if err != nil {
				t.Fatalf("Resolve(%v) error: %v", tt.in, err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("Resolve(%v) mismatch (-want +got):\n%s", tt.in, diff)
			}
		})
	}
}

func TestResolveUnknownDomain(t *testing.T) {
	in := []Descriptor{d(e("a", "b")), {Entries: e("a", "b"), Override: &Override{RequestsPerUnit: 1, Unit: Second}}}
	got, err := Resolve(nil, in)
	if err != nil || len(got) != 2 || got[0] != nil || got[1] != nil {
		t.Errorf("Resolve(nil, %v) = %v, %v, want [nil nil], nil", in, got, err)
	}
}

func TestResolveBadOverride(t *testing.T) {
	c := mustParse(t, "testdata/modes.yaml")
	for _, u := range []Unit{Unknown, Unit(8), Unit(-1)} {
		in := []Descriptor{d(e("backend", "b")), {Entries: e("backend", "b"), Override: &Override{RequestsPerUnit: 1, Unit: u}}}
		got, err := Resolve(c, in)
		if err == nil || got != nil {
			t.Errorf("Resolve(override unit %v) = %v, %v, want nil and an error", u, got, err)
		}
	}
}

func TestMatchReturnsFreshLimits(t *testing.T) {
	c := mustParse(t, "testdata/modes.yaml")
	entries := e("paid", "x")
	first := c.Match(entries)
	first.Replaces[0] = "changed"
	first.RequestsPerUnit = 1
	second := c.Match(entries)
	if second.Replaces[0] != "free_tier" || second.RequestsPerUnit != 50 {
		t.Errorf("Match(%v) after changing an earlier result = %+v, want the configured limit", entries, second)
	}
}

func TestOverLimit(t *testing.T) {
	plain := &Limit{RequestsPerUnit: 1, Unit: Second}
	shadow := &Limit{RequestsPerUnit: 1, Unit: Second, ShadowMode: true}
	quota := &Limit{RequestsPerUnit: 1, Unit: Day, QuotaMode: true}
	shadowQuota := &Limit{RequestsPerUnit: 1, Unit: Day, QuotaMode: true, ShadowMode: true}
	unlimited := &Limit{Unlimited: true}
	tests := []struct {
		name   string
		limits []*Limit
		over   []bool
		want   bool
	}{
		{"nothing", nil, nil, false},
		{"one limit over", []*Limit{plain}, []bool{true}, true},
		{"one limit within", []*Limit{plain}, []bool{false}, false},
		{"any ordinary limit over", []*Limit{plain, plain}, []bool{false, true}, true},
		{"shadow_mode never refuses", []*Limit{shadow}, []bool{true}, false},
		{"unlimited never refuses", []*Limit{unlimited}, []bool{true}, false},
		{"no limit never refuses", []*Limit{nil}, []bool{true}, false},
		{"one of two quotas over", []*Limit{quota, quota}, []bool{true, false}, false},
		{"every quota over", []*Limit{quota, quota}, []bool{true, true}, true},
		{"single quota over", []*Limit{quota}, []bool{true}, true},
		{"quotas over, ordinary within", []*Limit{quota, plain}, []bool{true, false}, true},
		{"quota room left, ordinary over", []*Limit{quota, quota, plain}, []bool{true, false, true}, true},
		{"shadow quota counts as a quota with room", []*Limit{quota, shadowQuota}, []bool{true, true}, false},
		{"shadow quota alone", []*Limit{shadowQuota}, []bool{true}, false},
		{"missing outcomes are within", []*Limit{plain, quota}, []bool{false}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := OverLimit(tt.limits, tt.over); got != tt.want {
				t.Errorf("OverLimit(%v) = %v, want %v", tt.over, got, tt.want)
			}
		})
	}
}
