package policy

import (
	"strconv"
	"strings"
	"testing"

	"github.com/leakytokens/leaky/ratelimit/gcra"
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

// max_clients_per_user is the example's, else DefaultMaxClientsPerUser.
func TestMaxClientsPerUser(t *testing.T) {
	p, err := Parse("example.yaml", Example())
	if err != nil {
		t.Fatal(err)
	}
	if p.MaxClientsPerUser != 10 {
		t.Errorf("example max_clients_per_user = %d, want 10", p.MaxClientsPerUser)
	}
	base := "tiers: {a: {}}\ndefault_tier: a\nproviders: {x: {capacity: 1, leak_rate: 1}}\n"
	for in, want := range map[string]int{"": DefaultMaxClientsPerUser, "max_clients_per_user: 1\n": 1, "max_clients_per_user: 1000\n": 1000} {
		p, err := Parse("p.yaml", []byte(base+in))
		if err != nil || p.MaxClientsPerUser != want {
			t.Errorf("Parse(%q).MaxClientsPerUser = %v, %v, want %d", in, p, err, want)
		}
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
		// Everything below would otherwise load and then fail open or
		// never apply.
		{"unrepresentable bucket", "tiers: {free: {buckets: {openai: {capacity: 4000000000000, leak_rate: 40}}}}\ndefault_tier: free\nproviders: {openai: {capacity: 1, leak_rate: 1}}\n",
			"tiers.free.buckets.openai: capacity 4000000000000 at leak_rate 40 cannot be represented"},
		{"unrepresentable bucket written as a float", "tiers: {a: {}}\ndefault_tier: a\norganisations: {\"*\": {capacity: 4e12, leak_rate: 40}}\n",
			"organisations.*: capacity 4000000000000 at leak_rate 40 cannot be represented"},
		{"rate too slow for one token", "tiers: {a: {}}\ndefault_tier: a\nproviders: {x: {capacity: 1, leak_rate: 1e-10}}\n", "providers.x: capacity 1 at leak_rate 1e-10 cannot be represented"},
		{"smallest denormal rate", "tiers: {a: {}}\ndefault_tier: a\nproviders: {x: {capacity: 1, leak_rate: 5e-324}}\n", "providers.x: capacity 1 at leak_rate 5e-324 cannot be represented"},
		{"NaN rate", "tiers: {a: {}}\ndefault_tier: a\nproviders: {x: {capacity: 1, leak_rate: .nan}}\n", "providers.x.leak_rate NaN"},
		{"infinite rate", "tiers: {a: {}}\ndefault_tier: a\nproviders: {x: {capacity: 1, leak_rate: .inf}}\n", "providers.x.leak_rate +Inf"},
		{"rate faster than the clock", "tiers: {a: {}}\ndefault_tier: a\nproviders: {x: {capacity: 1, leak_rate: 2e6}}\n", "providers.x.leak_rate 2e+06"},
		{"capacity beyond int64", "tiers: {a: {}}\ndefault_tier: a\nproviders: {x: {capacity: 99999999999999999999, leak_rate: 1}}\n", "cannot unmarshal"},
		{"missing capacity", "tiers: {a: {}}\ndefault_tier: a\nproviders: {x: {leak_rate: 1}}\n", "providers.x.capacity 0"},
		{"null bucket", "tiers: {a: {}}\ndefault_tier: a\nproviders: {x: ~}\n", "providers.x.capacity 0"},
		{"failure mode in capitals", "tiers: {a: {}}\ndefault_tier: a\nfailure_mode: Deny\n", `failure_mode "Deny"`},
		{"tier name with a space", "tiers: {\"gold plus\": {}}\ndefault_tier: \"gold plus\"\n", `tiers."gold plus": a tier name`},
		{"tier name with a newline", "tiers: {\"a\\nx-evil: 1\": {}}\ndefault_tier: \"a\\nx-evil: 1\"\n", "a tier name"},
		{"tier name with a colon", "tiers: {\"a:b\": {}}\ndefault_tier: \"a:b\"\n", "a tier name"},
		{"empty tier name", "tiers: {\"\": {}}\ndefault_tier: \"\"\n", `tiers."": a tier name`},
		{"empty role", "tiers: {a: {roles: [\"\"]}}\ndefault_tier: a\n", `tiers.a.roles: role ""`},
		{"upper-case provider", "tiers: {a: {}}\ndefault_tier: a\nproviders: {OpenAI: {capacity: 1, leak_rate: 1}}\n", "providers.OpenAI: a provider name"},
		{"provider with a slash", "tiers: {a: {}}\ndefault_tier: a\nproviders: {\"open/ai\": {capacity: 1, leak_rate: 1}}\n", `providers."open/ai": a provider name`},
		{"empty provider", "tiers: {a: {}}\ndefault_tier: a\nproviders: {\"\": {capacity: 1, leak_rate: 1}}\n", `providers."": a provider name`},
		{"tier bucket for an unlisted provider", "tiers: {a: {buckets: {mistral: {capacity: 1, leak_rate: 1}}}}\ndefault_tier: a\nproviders: {openai: {capacity: 1, leak_rate: 1}}\n",
			`tiers.a.buckets.mistral: provider "mistral" is not listed under providers`},
		{"organisation bucket for an unlisted provider", "tiers: {a: {}}\ndefault_tier: a\norganisations: {qwen: {capacity: 1, leak_rate: 1}}\n",
			`organisations.qwen: provider "qwen" is not listed under providers`},
		// authz names only providers listed by name, so without one no
		// request carries a descriptor and nothing is limited.
		{"no providers section", "tiers: {a: {buckets: {\"*\": {capacity: 1, leak_rate: 1}}}}\ndefault_tier: a\norganisations: {\"*\": {capacity: 1, leak_rate: 1}}\n",
			"providers: at least one provider must be listed by name"},
		{"empty providers section", "tiers: {a: {buckets: {\"*\": {capacity: 1, leak_rate: 1}}}}\ndefault_tier: a\nproviders: {}\n",
			"providers: at least one provider must be listed by name"},
		{"only a wildcard provider pool", "tiers: {a: {buckets: {\"*\": {capacity: 1, leak_rate: 1}}}}\ndefault_tier: a\nproviders: {\"*\": {capacity: 1, leak_rate: 1}}\n",
			"providers: at least one provider must be listed by name"},
		{"a wildcard provider pool beside named ones", "tiers: {a: {}}\ndefault_tier: a\nproviders: {openai: {capacity: 1, leak_rate: 1}, \"*\": {capacity: 1, leak_rate: 1}}\n",
			`providers."*": authz names only the providers listed here by name, so a "*" pool would never apply`},
		// The bucket drains one token every whole microsecond: 700000/s
		// would run as 1e6/s.
		{"fast rate rounded up", "tiers: {a: {}}\ndefault_tier: a\nproviders: {x: {capacity: 1, leak_rate: 700000}}\n",
			"providers.x.leak_rate 700000: would run as 1000000 tokens/s (+42.9%), more than 1% off: the bucket drains one token every whole number of microseconds, so a rate above 20000 must be close to 1000000/n for a whole n; the nearest are 500000 and 1000000"},
		{"fast rate rounded down", "tiers: {a: {buckets: {x: {capacity: 1, leak_rate: 400000}}}}\ndefault_tier: a\nproviders: {x: {capacity: 1, leak_rate: 1}}\n",
			"tiers.a.buckets.x.leak_rate 400000: would run as 333333.333 tokens/s (-16.7%)"},
		{"rate just over the bound", "tiers: {a: {}}\ndefault_tier: a\norganisations: {\"*\": {capacity: 1, leak_rate: 33000}}\nproviders: {x: {capacity: 1, leak_rate: 1}}\n",
			"organisations.*.leak_rate 33000: would run as 33333.333 tokens/s (+1.0%)"},
		{"reservation ttl below a second", "tiers: {a: {}}\ndefault_tier: a\nreservation_ttl: 1ns\n", "reservation_ttl 1ns: must be at least 1s"},
		{"negative reservation ttl", "tiers: {a: {}}\ndefault_tier: a\nreservation_ttl: -1m\n", "reservation_ttl -1m0s"},
		{"reservation ttl above a day", "tiers: {a: {}}\ndefault_tier: a\nreservation_ttl: 25h\n", "reservation_ttl 25h0m0s: must be at most 24h"},
		{"negative max clients per user", "tiers: {a: {}}\ndefault_tier: a\nmax_clients_per_user: -1\n", "max_clients_per_user -1: must be 1 to 1000"},
		{"max clients per user too large", "tiers: {a: {}}\ndefault_tier: a\nmax_clients_per_user: 1001\n", "max_clients_per_user 1001: must be 1 to 1000"},
		{"two documents", "tiers: {a: {}}\ndefault_tier: a\n---\nproviders: {x: {capacity: 1, leak_rate: 1}}\n", "more than one YAML document"},
		{"duplicate key", "tiers: {a: {}}\ndefault_tier: a\nproviders: {x: {capacity: 1, leak_rate: 1}, x: {capacity: 2, leak_rate: 1}}\n", "already defined"},
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

// Every bucket of a parsed policy carries its GCRA limit, so the request
// path never builds one.
func TestBucketLimits(t *testing.T) {
	p, err := Parse("example.yaml", Example())
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		b    Bucket
		ok   bool
		want gcra.Limit
	}{
		{"free openai", must(p.UserBucket("free", "openai")), true, gcra.Limit{Burst: 4000, Interval: 25000}},
		{"free wildcard", must(p.UserBucket("free", "gemini")), true, gcra.Limit{Burst: 2000, Interval: 50000}},
		{"organisation", must(p.OrgBucket("qwen")), true, gcra.Limit{Burst: 100000, Interval: 1000}},
		{"provider", must(p.ProviderBucket("qwen")), true, gcra.Limit{Burst: 500000, Interval: 100}},
	}
	for _, tt := range tests {
		if got := tt.b.Limit(); got != tt.want || got.Validate() != nil {
			t.Errorf("%s: Limit() = %+v, want %+v", tt.name, got, tt.want)
		}
	}
	if got := (Bucket{Capacity: 1, LeakRate: 1}).Limit(); got.Validate() == nil {
		t.Errorf("a hand-made Bucket's Limit() = %+v, want the invalid zero Limit", got)
	}
}

func must(b Bucket, ok bool) Bucket {
	if !ok {
		return Bucket{}
	}
	return b
}

// The largest bucket the algorithm represents loads; one token more is
// refused.
func TestBucketSpanBoundary(t *testing.T) {
	head := "tiers: {a: {}}\ndefault_tier: a\nproviders: {x: {leak_rate: 1, capacity: "
	maxCap := gcra.MaxSpan / 1e6
	p, err := Parse("p.yaml", []byte(head+strconv.FormatInt(maxCap, 10)+"}}\n"))
	if err != nil {
		t.Fatalf("Parse(capacity %d at 1/s) = %v, want it loaded", maxCap, err)
	}
	if got := p.Providers["x"].Limit(); got.Tolerance() > gcra.MaxSpan || got.Burst != maxCap {
		t.Errorf("Limit() = %+v, want burst %d within MaxSpan", got, maxCap)
	}
	if _, err := Parse("p.yaml", []byte(head+strconv.FormatInt(maxCap+1, 10)+"}}\n")); err == nil {
		t.Errorf("Parse(capacity %d at 1/s) = nil, want a refusal", maxCap+1)
	}
}

// A rate the microsecond interval represents within MaxRateError loads, and
// runs as the interval says.
func TestFastRatesThatLoad(t *testing.T) {
	tests := []struct {
		rate     string
		interval int64
	}{
		{"1e6", 1},
		{"500000", 2},
		{"333333", 3},
		{"30100", 33}, // runs as 1e6/33 = 30303.03, +0.67 %
		{"20000", 50},
		{"20400", 49}, // runs as 1e6/49 = 20408.16, +0.04 %
		{"0.5", 2000000},
	}
	for _, tt := range tests {
		yaml := "tiers: {a: {}}\ndefault_tier: a\nproviders: {x: {capacity: 10, leak_rate: " + tt.rate + "}}\n"
		p, err := Parse("p.yaml", []byte(yaml))
		if err != nil {
			t.Errorf("Parse(leak_rate %s) = %v, want it loaded", tt.rate, err)
			continue
		}
		if got := p.Providers["x"].Limit().Interval; got != tt.interval {
			t.Errorf("leak_rate %s: interval %d µs, want %d", tt.rate, got, tt.interval)
		}
	}
}

func TestParseReportsEveryProblem(t *testing.T) {
	_, err := Parse("p.yaml", []byte("tiers: {a: {}}\ndefault_tier: b\nfailure_mode: maybe\n"))
	if err == nil || !strings.Contains(err.Error(), "default_tier") || !strings.Contains(err.Error(), "failure_mode") {
		t.Fatalf("Parse = %v, want both problems", err)
	}
	for _, line := range strings.Split(err.Error(), "\n") {
		if !strings.HasPrefix(line, "p.yaml: ") {
			t.Errorf("Parse error line %q, want it prefixed with the file name", line)
		}
	}
}
