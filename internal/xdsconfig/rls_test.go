package xdsconfig

import (
	"strings"
	"testing"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	rlconfv3 "github.com/envoyproxy/go-control-plane/ratelimit/config/ratelimit/v3"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/leakytokens/leaky/ratelimit/rules"
)

func limit(unit rlconfv3.RateLimitUnit, rpu uint32) *rlconfv3.RateLimitPolicy {
	return &rlconfv3.RateLimitPolicy{Unit: unit, RequestsPerUnit: rpu}
}

// Each RateLimitConfig becomes the rule file it stands for, field by
// field; what the loader then says of it is envoyproxy/ratelimit's answer
// to the same resource (parse is "" when the file loads).
func TestRLSYAML(t *testing.T) {
	tests := []struct {
		name  string
		cfg   *rlconfv3.RateLimitConfig
		want  string
		parse string
	}{
		{"domain only", &rlconfv3.RateLimitConfig{Name: "n", Domain: "d"}, "domain: d\n", ""},
		{"every field but metadata", &rlconfv3.RateLimitConfig{Domain: "d", Descriptors: []*rlconfv3.RateLimitDescriptor{{
			Key: "k", Value: "v", ShadowMode: true, DetailedMetric: true, QuotaMode: true,
			RateLimit: &rlconfv3.RateLimitPolicy{Unit: rlconfv3.RateLimitUnit_MINUTE, RequestsPerUnit: 5, Name: "a",
				Replaces: []*rlconfv3.RateLimitReplace{{Name: "b"}}},
			Descriptors: []*rlconfv3.RateLimitDescriptor{{Key: "c", RateLimit: &rlconfv3.RateLimitPolicy{
				Unit: rlconfv3.RateLimitUnit_DAY, RequestsPerUnit: 1, Name: "b"}}},
		}}}, `domain: d
descriptors:
    - key: k
      value: v
      rate_limit:
        unit: MINUTE
        requests_per_unit: 5
        name: a
        replaces:
            - name: b
      descriptors:
        - key: c
          rate_limit:
            unit: DAY
            requests_per_unit: 1
            name: b
      shadow_mode: true
      detailed_metric: true
      quota_mode: true
`, ""},
		{"values YAML would misread are quoted", &rlconfv3.RateLimitConfig{Domain: "yes", Descriptors: []*rlconfv3.RateLimitDescriptor{
			{Key: "k", Value: "*", RateLimit: limit(rlconfv3.RateLimitUnit_SECOND, 0)},
			{Key: "null", Value: "10"}}},
			"domain: \"yes\"\ndescriptors:\n    - key: k\n      value: '*'\n      rate_limit:\n        unit: SECOND\n        requests_per_unit: 0\n    - key: \"null\"\n      value: \"10\"\n", ""},
		{"unlimited: no unit nor requests_per_unit when unset", &rlconfv3.RateLimitConfig{Domain: "d", Descriptors: []*rlconfv3.RateLimitDescriptor{
			{Key: "k", RateLimit: &rlconfv3.RateLimitPolicy{Unlimited: true}}}},
			"domain: d\ndescriptors:\n    - key: k\n      rate_limit:\n        unlimited: true\n", ""},
		{"unlimited with a unit", &rlconfv3.RateLimitConfig{Domain: "d", Descriptors: []*rlconfv3.RateLimitDescriptor{
			{Key: "k", RateLimit: &rlconfv3.RateLimitPolicy{Unlimited: true, Unit: rlconfv3.RateLimitUnit_HOUR}}}},
			"domain: d\ndescriptors:\n    - key: k\n      rate_limit:\n        unit: HOUR\n        unlimited: true\n",
			"should not specify rate limit unit when unlimited"},
		{"unit unknown", &rlconfv3.RateLimitConfig{Domain: "d", Descriptors: []*rlconfv3.RateLimitDescriptor{
			{Key: "k", RateLimit: limit(rlconfv3.RateLimitUnit_UNKNOWN, 3)}}},
			"domain: d\ndescriptors:\n    - key: k\n      rate_limit:\n        unit: UNKNOWN\n        requests_per_unit: 3\n",
			"invalid rate limit unit 'UNKNOWN'"},
		{"unit out of range", &rlconfv3.RateLimitConfig{Domain: "d", Descriptors: []*rlconfv3.RateLimitDescriptor{
			{Key: "k", RateLimit: limit(42, 3)}}},
			"domain: d\ndescriptors:\n    - key: k\n      rate_limit:\n        unit: \"42\"\n        requests_per_unit: 3\n",
			"invalid rate limit unit '42'"},
		{"empty key", &rlconfv3.RateLimitConfig{Domain: "d", Descriptors: []*rlconfv3.RateLimitDescriptor{{Value: "v"}}},
			"domain: d\ndescriptors:\n    - key: \"\"\n      value: v\n", "key"},
		{"empty metadata is none", &rlconfv3.RateLimitConfig{Domain: "d", Descriptors: []*rlconfv3.RateLimitDescriptor{
			{Key: "k", Metadata: &structpb.Struct{}}}}, "domain: d\ndescriptors:\n    - key: k\n", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := rlsYAML(tt.cfg)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, string(got)); diff != "" {
				t.Errorf("YAML (-want +got):\n%s", diff)
			}
			_, err = rules.Parse("f", got)
			switch {
			case tt.parse == "" && err != nil:
				t.Errorf("rules.Parse = %v, want the file to load", err)
			case tt.parse != "" && (err == nil || !strings.Contains(err.Error(), tt.parse)):
				t.Errorf("rules.Parse = %v, want an error containing %q", err, tt.parse)
			}
		})
	}
}

// Metadata (a Struct) becomes a mapping, nested values kept. The loader
// takes the key once rules accepts metadata (issue #10 §1, helper A).
func TestRLSYAMLMetadata(t *testing.T) {
	md, err := structpb.NewStruct(map[string]any{"name": "svc", "n": 3.0, "nested": map[string]any{"list": []any{"a", true}}})
	if err != nil {
		t.Fatal(err)
	}
	got, err := rlsYAML(&rlconfv3.RateLimitConfig{Domain: "d", Descriptors: []*rlconfv3.RateLimitDescriptor{{Key: "k", Metadata: md}}})
	if err != nil {
		t.Fatal(err)
	}
	want := "domain: d\ndescriptors:\n    - key: k\n      metadata:\n        \"n\": 3\n        name: svc\n        nested:\n            list:\n                - a\n                - true\n"
	if diff := cmp.Diff(want, string(got)); diff != "" {
		t.Errorf("YAML (-want +got):\n%s", diff)
	}
}

func rlsAnys(t *testing.T, cfgs ...*rlconfv3.RateLimitConfig) []*anypb.Any {
	t.Helper()
	out := make([]*anypb.Any, len(cfgs))
	for i, c := range cfgs {
		a, err := anypb.New(c)
		if err != nil {
			t.Fatal(err)
		}
		out[i] = a
	}
	return out
}

func TestDecodeRLS(t *testing.T) {
	foo := &rlconfv3.RateLimitConfig{Name: "foo-1", Domain: "foo"}
	bytesRes, err := anypb.New(wrapperspb.Bytes([]byte{0xff, 0xfe}))
	if err != nil {
		t.Fatal(err)
	}
	bytesRes.TypeUrl = RateLimitConfigType // invalid UTF-8 in the name's field
	tests := []struct {
		name string
		res  []*anypb.Any
		want string
	}{
		{"bytes that are no RateLimitConfig", []*anypb.Any{bytesRes}, "resource 0: not a RateLimitConfig"},
		{"another type", func() []*anypb.Any { a, _ := anypb.New(wrapperspb.String("x")); return []*anypb.Any{a} }(), "resource 0: not a RateLimitConfig"},
		{"two of one name", rlsAnys(t, foo, &rlconfv3.RateLimitConfig{Name: "foo-1", Domain: "bar"}), `resources 0 and 1 are both RateLimitConfig "foo-1"`},
		{"two unnamed of one domain", rlsAnys(t, &rlconfv3.RateLimitConfig{Domain: "x"}, &rlconfv3.RateLimitConfig{Domain: "x"}), `both RateLimitConfig "(unnamed, domain x)"`},
		{"empty domain", rlsAnys(t, &rlconfv3.RateLimitConfig{Name: "e"}), "RateLimitConfig/e: config file cannot have empty domain"},
		{"the policy's domain", rlsAnys(t, &rlconfv3.RateLimitConfig{Name: "p", Domain: "leaky-tokens"}), "domain leaky-tokens is the policy's"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := decodeRLS(&discoveryv3.DiscoveryResponse{TypeUrl: RateLimitConfigType, Resources: tt.res})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("decodeRLS = %v, want an error containing %q", err, tt.want)
			}
		})
	}
	files, err := decodeRLS(&discoveryv3.DiscoveryResponse{Resources: rlsAnys(t, foo, &rlconfv3.RateLimitConfig{Domain: "bar"})})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, f := range files {
		names = append(names, f.name+"="+f.domain)
	}
	if diff := cmp.Diff([]string{"RateLimitConfig/foo-1=foo", "RateLimitConfig/(unnamed, domain bar)=bar"}, names); diff != "" {
		t.Errorf("files (-want +got):\n%s", diff)
	}
}

func TestTLSFilesCheck(t *testing.T) {
	tests := []struct {
		files TLSFiles
		want  string
	}{
		{TLSFiles{Cert: "c", Key: "k"}, "a CA file is required"},
		{TLSFiles{CA: "ca", Cert: "c"}, "both or neither"},
		{TLSFiles{CA: "ca", Key: "k"}, "both or neither"},
		{TLSFiles{ServerName: "x"}, "a CA file is required"},
	}
	for _, tt := range tests {
		if err := tt.files.Check(); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%+v.Check() = %v, want %q", tt.files, err, tt.want)
		}
	}
	if err := (TLSFiles{CA: "ca"}).Check(); err != nil {
		t.Errorf("CA only: %v", err)
	}
	if _, err := (TLSFiles{CA: "/nonexistent/ca.pem"}).Config(); err == nil || !strings.Contains(err.Error(), "xds tls ca") {
		t.Errorf("Config with a missing CA file = %v, want an xds tls ca error", err)
	}
}
