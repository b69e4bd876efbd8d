package rules

import (
	"os"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/structpb"
)

func mustParse(t testing.TB, path string) *Config {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	c, err := Parse(path, data)
	if err != nil {
		t.Fatalf("Parse(%s) error: %v", path, err)
	}
	return c
}

// e builds entries from key, value pairs.
func e(kv ...string) []Entry {
	out := make([]Entry, 0, len(kv)/2)
	for i := 0; i+1 < len(kv); i += 2 {
		out = append(out, Entry{kv[i], kv[i+1]})
	}
	return out
}

// lim is a limited Limit whose counter is the request's entries.
func lim(rpu uint32, u Unit, fullKey string, entries []Entry) *Limit {
	return &Limit{RequestsPerUnit: rpu, Unit: u, FullKey: fullKey, Counter: entries}
}

type matchCase struct {
	name    string
	entries []Entry
	want    *Limit
}

func runMatch(t *testing.T, c *Config, tests []matchCase) {
	t.Helper()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := c.Match(tt.entries)
			if diff := cmp.Diff(tt.want, got, protocmp.Transform()); diff != "" {
				t.Errorf("Match(%v) mismatch (-want +got):\n%s", tt.entries, diff)
			}
		})
	}
}

func TestMatchBasic(t *testing.T) {
	c := mustParse(t, "testdata/basic.yaml")
	runMatch(t, c, []matchCase{
		{"nested default value", e("key1", "value1", "subkey1", "something"),
			lim(5, Second, "test-domain.key1_value1.subkey1", e("key1", "value1", "subkey1", "something"))},
		{"nested exact value beats default", e("key1", "value1", "subkey1", "subvalue1"),
			lim(10, Second, "test-domain.key1_value1.subkey1_subvalue1", e("key1", "value1", "subkey1", "subvalue1"))},
		{"no rule for the value and no default", e("key1", "something"), nil},
		{"placeholder without limit", e("key1", "value1"), nil},
		{"default value", e("key2", "something"), lim(20, Minute, "test-domain.key2", e("key2", "something"))},
		{"empty value takes the default", e("key2", ""), lim(20, Minute, "test-domain.key2", e("key2", ""))},
		{"exact value", e("key2", "value2"), lim(30, Minute, "test-domain.key2_value2", e("key2", "value2"))},
		{"request deeper than the rules", e("key2", "value2", "subkey", "subvalue"), nil},
		{"keys are case-sensitive", e("KEY2", "value2"), nil},
		{"unknown key", e("nope", "x"), nil},
		{"no entries", nil, nil},
		{"hour, upper case in the file", e("hour", "x"), lim(1, Hour, "test-domain.hour", e("hour", "x"))},
		{"day", e("day", "x"), lim(2, Day, "test-domain.day", e("day", "x"))},
		{"week", e("week", "x"), lim(3, Week, "test-domain.week", e("week", "x"))},
		{"month", e("month", "x"), lim(4, Month, "test-domain.month", e("month", "x"))},
		{"year", e("year", "x"), lim(5, Year, "test-domain.year", e("year", "x"))},
		{"unlimited", e("internal", "x"),
			&Limit{Unlimited: true, FullKey: "test-domain.internal", Counter: e("internal", "x")}},
		{"generic address", e("remote_address", "50.0.0.1"),
			lim(10, Second, "test-domain.remote_address", e("remote_address", "50.0.0.1"))},
		{"blocked address", e("remote_address", "50.0.0.5"),
			lim(0, Second, "test-domain.remote_address_50.0.0.5", e("remote_address", "50.0.0.5"))},
		{"allow-listed key", e("healthcheck", "x"), nil},
		{"limit at depth 1", e("tier", "gold"), lim(100, Minute, "test-domain.tier_gold", e("tier", "gold"))},
		{"limit below a limited rule", e("tier", "gold", "user", "u1"),
			lim(10, Minute, "test-domain.tier_gold.user", e("tier", "gold", "user", "u1"))},
		{"numeric value in the file", e("code", "429"), lim(1, Second, "test-domain.code_429", e("code", "429"))},
	})

	entries := e("key2", "v")
	l := c.Match(entries)
	entries[0].Value = "changed"
	if l.Counter[0].Value != "v" {
		t.Errorf("Match result shares the caller's entries: Counter = %v", l.Counter)
	}
	var nilConfig *Config
	if got := nilConfig.Match(e("key2", "v")); got != nil {
		t.Errorf("(*Config)(nil).Match() = %v, want nil", got)
	}
}

func TestMatchWildcard(t *testing.T) {
	c := mustParse(t, "testdata/wildcard.yaml")
	runMatch(t, c, []matchCase{
		{"exact value beats wildcard", e("path", "/api/v1"),
			lim(100, Minute, "wild-domain.path_/api/v1", e("path", "/api/v1"))},
		{"wildcard prefix", e("path", "/api/v2"),
			lim(20, Minute, "wild-domain.path_/api/*", e("path", "/api/v2"))},
		{"value equal to the prefix", e("path", "/api/"),
			lim(20, Minute, "wild-domain.path_/api/*", e("path", "/api/"))},
		{"first wildcard in file order wins", e("path", "/api/admin/users"),
			lim(20, Minute, "wild-domain.path_/api/*", e("path", "/api/admin/users"))},
		{"no prefix match falls back to the default", e("path", "/other"),
			lim(5, Minute, "wild-domain.path", e("path", "/other"))},
		{"literal pattern text matches the wildcard rule exactly", e("path", "/api/*"),
			lim(20, Minute, "wild-domain.path_/api/*", e("path", "/api/*"))},
		{"the pattern's own text matches exactly", e("mid", "a*b"), lim(6, Minute, "wild-domain.mid_a*b", e("mid", "a*b"))},
		{"mid-value wildcard", e("mid", "axxb"), lim(6, Minute, "wild-domain.mid_a*b", e("mid", "axxb"))},
		{"mid-value wildcard, empty middle", e("mid", "ab"), lim(6, Minute, "wild-domain.mid_a*b", e("mid", "ab"))},
		{"mid-value wildcard, wrong suffix", e("mid", "axxc"), nil},
		{"lone star matches anything", e("any", "anything"), lim(7, Minute, "wild-domain.any_*", e("any", "anything"))},
		{"lone star matches the empty value", e("any", ""), lim(7, Minute, "wild-domain.any_*", e("any", ""))},
		{"nested wildcards", e("tenant", "t-1", "user", "admin-bob"),
			lim(8, Minute, "wild-domain.tenant_t-*.user_admin*", e("tenant", "t-1", "user", "admin-bob"))},
		{"nested wildcard without match", e("tenant", "t-1", "user", "bob"), nil},
		{"outer wildcard without match", e("tenant", "x-1", "user", "admin"), nil},
		{"exact rule without nested rules, no backtracking", e("nb", "x", "sub", "y"), nil},
		{"default rule with nested rules", e("nb", "z", "sub", "y"),
			lim(10, Minute, "wild-domain.nb.sub", e("nb", "z", "sub", "y"))},
		{"exact rule at its own depth", e("nb", "x"), lim(9, Minute, "wild-domain.nb_x", e("nb", "x"))},
	})
}

func TestMatchMetricKeys(t *testing.T) {
	c := mustParse(t, "testdata/metrics.yaml")
	detailed := func(l *Limit) *Limit { l.DetailedMetric = true; return l }
	shared := func(l *Limit, counter []Entry) *Limit { l.ShareThreshold = true; l.Counter = counter; return l }
	runMatch(t, c, []matchCase{
		{"value_to_metric on default rules", e("route", "api", "http_method", "GET", "subject_id", "123"),
			lim(60, Minute, "metrics.route_api.http_method_GET.subject_id", e("route", "api", "http_method", "GET", "subject_id", "123"))},
		{"value_to_metric with an empty value", e("route", "", "http_method", "GET", "subject_id", "1"),
			lim(60, Minute, "metrics.route.http_method_GET.subject_id", e("route", "", "http_method", "GET", "subject_id", "1"))},
		{"detailed_metric", e("detailed", "x", "user", "bob"),
			detailed(lim(70, Minute, "metrics.detailed_x.user_bob", e("detailed", "x", "user", "bob")))},
		{"detailed_metric wins over value_to_metric", e("both", "x", "user", "bob"),
			detailed(lim(71, Minute, "metrics.both_x.user_bob", e("both", "x", "user", "bob")))},
		{"detailed_metric with an empty value keeps the underscore", e("empty", ""),
			detailed(lim(72, Minute, "metrics.empty_", e("empty", "")))},
		{"share_threshold shares the counter", e("files", "files/a.pdf"),
			shared(lim(100, Minute, "metrics.files_files/*", nil), e("files", "files/*"))},
		{"share_threshold, another value, same counter", e("files", "files/b.csv"),
			shared(lim(100, Minute, "metrics.files_files/*", nil), e("files", "files/*"))},
		{"wildcard with value_to_metric names the full value", e("wild", "foo1"),
			lim(101, Minute, "metrics.wild_foo1", e("wild", "foo1"))},
		{"wildcard names the pattern, counts per value", e("plainwild", "foo1"),
			lim(102, Minute, "metrics.plainwild_foo*", e("plainwild", "foo1"))},
		{"share_threshold above a detailed_metric leaf", e("svc", "svc/a", "endpoint", "e1"),
			detailed(shared(lim(80, Minute, "metrics.svc_svc/*.endpoint_e1", nil), e("svc", "svc/*", "endpoint", "e1")))},
		{"share_threshold above a detailed_metric leaf, empty value", e("svc", "svc/a", "endpoint", ""),
			detailed(shared(lim(80, Minute, "metrics.svc_svc/*.endpoint", nil), e("svc", "svc/*", "endpoint", "")))},
		{"share_threshold wins over value_to_metric", e("api", "api/x", "method", "GET"),
			shared(lim(60, Minute, "metrics.api_api/*.method", nil), e("api", "api/*", "method", "GET"))},
	})
}

func TestMatchModes(t *testing.T) {
	c := mustParse(t, "testdata/modes.yaml")
	set := func(l *Limit, f func(*Limit)) *Limit { f(l); return l }
	runMatch(t, c, []matchCase{
		{"shadow_mode", e("service", "s", "user", "user-a"),
			set(lim(10, Second, "modes.service.user_user-a", e("service", "s", "user", "user-a")), func(l *Limit) { l.ShadowMode = true })},
		{"sibling without shadow_mode", e("service", "s", "user", "user-b"),
			lim(20, Second, "modes.service.user_user-b", e("service", "s", "user", "user-b"))},
		{"quota_mode", e("backend", "b1"),
			set(lim(1000, Day, "modes.backend", e("backend", "b1")), func(l *Limit) { l.QuotaMode = true })},
		{"YAML 1.1 booleans", e("legacy", "x"),
			set(lim(1, Second, "modes.legacy", e("legacy", "x")), func(l *Limit) { l.ShadowMode = true })},
		{"named limit", e("key_1", "value_1", "user", "bkthomps"),
			set(lim(5, Second, "modes.key_1_value_1.user_bkthomps", e("key_1", "value_1", "user", "bkthomps")), func(l *Limit) { l.Name = "specific_limit" })},
		{"replacing limit", e("key_2", "value_2", "user", "bkthomps"),
			set(lim(10, Second, "modes.key_2_value_2.user_bkthomps", e("key_2", "value_2", "user", "bkthomps")), func(l *Limit) { l.Replaces = []string{"specific_limit"} })},
		{"named unlimited", e("free", "x"),
			&Limit{Unlimited: true, Name: "free_tier", FullKey: "modes.free", Counter: e("free", "x")}},
	})
}

func TestMatchAnchors(t *testing.T) {
	c := mustParse(t, "testdata/anchors.yaml")
	runMatch(t, c, []matchCase{
		{"anchor", e("a", "x"), lim(10, Minute, "anchors.a", e("a", "x"))},
		{"alias", e("b", "x"), lim(10, Minute, "anchors.b", e("b", "x"))},
		{"merge key, explicit field wins", e("c", "x"), lim(3, Minute, "anchors.c", e("c", "x"))},
	})
}

func BenchmarkResolve(b *testing.B) {
	c := mustParse(b, "testdata/metrics.yaml")
	in := []Descriptor{
		d(e("route", "api", "http_method", "GET", "subject_id", "123")),
		d(e("files", "files/a.pdf")),
		d(e("plainwild", "foo1")),
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Resolve(c, in); err != nil {
			b.Fatal(err)
		}
	}
}

func TestMatchGlob(t *testing.T) {
	c := mustParse(t, "testdata/glob.yaml")
	shared := func(l *Limit, counter []Entry) *Limit { l.ShareThreshold = true; l.Counter = counter; return l }
	runMatch(t, c, []matchCase{
		{"middle wildcard", e("path", "/api/123/v1"), lim(11, Minute, "glob.path_/api/*/v1", e("path", "/api/123/v1"))},
		{"middle wildcard spans slashes", e("path", "/api/a/b/v1"), lim(11, Minute, "glob.path_/api/*/v1", e("path", "/api/a/b/v1"))},
		{"middle wildcard, empty middle", e("path", "/api//v1"), lim(11, Minute, "glob.path_/api/*/v1", e("path", "/api//v1"))},
		{"middle wildcard, other suffix", e("path", "/api/123/v2"), nil},
		{"two wildcards", e("path", "/api/1/resource/2/action"),
			lim(12, Minute, "glob.path_/api/*/resource/*/action", e("path", "/api/1/resource/2/action"))},
		{"two wildcards, other suffix", e("path", "/api/1/resource/2/other"), nil},
		{"foo*bar*baz", e("multi", "foo123bar456baz"), lim(13, Minute, "glob.multi_foo*bar*baz", e("multi", "foo123bar456baz"))},
		{"foo*bar*baz, empty middles", e("multi", "foobarbaz"), lim(13, Minute, "glob.multi_foo*bar*baz", e("multi", "foobarbaz"))},
		{"foo*bar*baz without bar", e("multi", "foo123baz"), nil},
		{"foo*bar*baz without foo", e("multi", "bar456baz"), nil},
		{"foo*bar*baz, bar only inside the suffix", e("multi", "foobaz"), nil},
		{"prefix and suffix may not overlap", e("overlap", "a"), nil},
		{"prefix and suffix", e("overlap", "aa"), lim(14, Minute, "glob.overlap_a*a", e("overlap", "aa"))},
		{"two stars are one", e("stars", "xy"), lim(15, Minute, "glob.stars_x**y", e("stars", "xy"))},
		{"exact value first", e("order", "/a/b/c"), lim(22, Minute, "glob.order_/a/b/c", e("order", "/a/b/c"))},
		{"first wildcard in load order", e("order", "/a/x/c"), lim(20, Minute, "glob.order_/a/*/c", e("order", "/a/x/c"))},
		{"first wildcard in load order, not the most specific", e("order", "/a/b/x/c"),
			lim(20, Minute, "glob.order_/a/*/c", e("order", "/a/b/x/c"))},
		{"second wildcard", e("order", "/a/b/x"), lim(21, Minute, "glob.order_/a/b/*", e("order", "/a/b/x"))},
		{"no wildcard: the rule without a value", e("order", "/z"), lim(23, Minute, "glob.order", e("order", "/z"))},
		{"empty value: the rule without a value", e("order", ""), lim(23, Minute, "glob.order", e("order", ""))},
		{"shared middle wildcard", e("share", "/t/a/v2"), shared(lim(30, Minute, "glob.share_/t/*/v2", nil), e("share", "/t/*/v2"))},
		{"shared middle wildcard, another value, same counter", e("share", "/t/bb/v2"),
			shared(lim(30, Minute, "glob.share_/t/*/v2", nil), e("share", "/t/*/v2"))},
		{"the pattern's own text matches exactly and is not shared", e("share", "/t/*/v2"),
			lim(30, Minute, "glob.share_/t/*/v2", e("share", "/t/*/v2"))},
		{"shared nested wildcards", e("tenant", "t-1-prod", "resource", "res-a-v2"),
			shared(lim(31, Minute, "glob.tenant_t*prod.resource_res*v2", nil), e("tenant", "t*prod", "resource", "res*v2"))},
		{"a star in a key is literal", e("key*", "x"), lim(40, Minute, "glob.key*", e("key*", "x"))},
		{"no key wildcards", e("keyz", "x"), nil},
	})
}

func TestGlob(t *testing.T) {
	tests := []struct {
		pattern, s string
		want       bool
	}{
		{"bar*b", "barab", true},
		{"bar*b", "bar123b", true},
		{"bar*b", "barb", true},
		{"bar*b", "bara", false},
		{"bar*b", "xbarb", false},
		{"foo*", "foo1", true},
		{"foo*", "bar", false},
		{"*", "", true},
		{"*x", "x", true},
		{"*x*", "axb", true},
		{"*x*", "ab", false},
		{"a*b*c", "abbc", true},
		{"a*bc*c", "abc", false},
		{"foo", "foo1", false},
		{"é*ü", "éaü", true},
	}
	for _, tt := range tests {
		if got := glob(strings.Split(tt.pattern, "*"), tt.s); got != tt.want {
			t.Errorf("glob(%q, %q) = %v, want %v", tt.pattern, tt.s, got, tt.want)
		}
	}
}

func TestMatchMetadata(t *testing.T) {
	c := mustParse(t, "testdata/metadata.yaml")
	st := func(m map[string]any) *structpb.Struct {
		s, err := structpb.NewStruct(m)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	withMeta := func(l *Limit, m map[string]any) *Limit { l.Metadata = st(m); return l }
	quota := map[string]any{"name": "service_2", "ports": []any{80, 443}, "weight": 0.5, "enabled": true, "owner": nil, "1": "one"}
	runMatch(t, c, []matchCase{
		{"nested rule", e("key1", "value1", "subkey1", "something"),
			withMeta(lim(5, Second, "meta.key1_value1.subkey1", e("key1", "value1", "subkey1", "something")), map[string]any{"name": "service_1"})},
		{"nested mappings, lists and scalars", e("key2", "x"),
			withMeta(lim(20, Minute, "meta.key2", e("key2", "x")), map[string]any{"service_with_quota": quota})},
		{"merge key", e("key3", "x"),
			withMeta(lim(30, Minute, "meta.key3", e("key3", "x")), map[string]any{"service_with_quota": quota, "extra": true})},
		{"an ancestor's metadata does not apply", e("parent", "p", "child", "c"),
			lim(40, Minute, "meta.parent.child", e("parent", "p", "child", "c"))},
		{"empty metadata is none", e("empty", "x"), lim(50, Minute, "meta.empty", e("empty", "x"))},
	})
}

// Envoy Gateway's rendering (root name, explicit nulls and empty lists)
// loads and decides like the equivalent terse file.
func TestMatchGatewayShape(t *testing.T) {
	c := mustParse(t, "testdata/gateway.yaml")
	if c.Name != "default/eg/http" || c.Domain != "default/eg/http" {
		t.Errorf("Parse(gateway.yaml) name, domain = %q, %q; want default/eg/http twice", c.Name, c.Domain)
	}
	route := "httproute/default/backend/rule/0/match/0"
	shadow := func(l *Limit) *Limit { l.ShadowMode = true; return l }
	runMatch(t, c, []matchCase{
		{"header match, key only", e(route, route, "rule-0-match-0", "anything"),
			lim(3, Minute, "default/eg/http."+route+"_"+route+".rule-0-match-0", e(route, route, "rule-0-match-0", "anything"))},
		{"CIDR then distinct address", e(route, route, "masked_remote_address", "10.0.0.0/8", "remote_address", "10.1.2.3"),
			shadow(lim(1, Second, "default/eg/http."+route+"_"+route+".masked_remote_address_10.0.0.0/8.remote_address",
				e(route, route, "masked_remote_address", "10.0.0.0/8", "remote_address", "10.1.2.3")))},
		{"placeholder with rate_limit null", e(route, route), nil},
		{"other route", e("x", "x", "rule-0-match-0", "a"), nil},
	})
}
