package ratelimit

import (
	"context"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	ratelimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/structpb"
)

// parity answers for envoyproxy/ratelimit's behaviours, through the real
// gRPC server.

func answersOf(t *testing.T, s *server, domain string, n int, ds ...*ratelimitv3.RateLimitDescriptor) []rlsv3.RateLimitResponse_Code {
	t.Helper()
	var out []rlsv3.RateLimitResponse_Code
	for i := 0; i < n; i++ {
		out = append(out, s.ask(t, domain, 1, ds...).OverallCode)
	}
	return out
}

// An unlimited descriptor answers exactly {OK, remaining 4294967295}: no
// current_limit, no duration_until_reset.
func TestUnlimitedStatus(t *testing.T) {
	s := start(t, testConfig(t, "memory", "policy.yaml", "messaging.yaml"))
	r := s.ask(t, "messaging", 1, desc("free=x"))
	want := &rlsv3.RateLimitResponse_DescriptorStatus{Code: okc, LimitRemaining: math.MaxUint32}
	if diff := cmp.Diff(want, r.Statuses[0], protocmp.Transform()); diff != "" {
		t.Errorf("unlimited status mismatch (-want +got):\n%s", diff)
	}
}

// Wildcards anywhere in a value, and share_threshold on one: every value
// the pattern matches charges one counter.
func TestWildcardSharedCounter(t *testing.T) {
	s := start(t, testConfig(t, "memory", "parity.yaml"))
	got := []rlsv3.RateLimitResponse_Code{
		s.ask(t, "parity", 1, desc("path=/t/a/v2")).OverallCode,
		s.ask(t, "parity", 1, desc("path=/t/bb/v2")).OverallCode,
		s.ask(t, "parity", 1, desc("path=/t//v2")).OverallCode,
	}
	if diff := cmp.Diff([]rlsv3.RateLimitResponse_Code{okc, okc, over}, got); diff != "" {
		t.Errorf("shared /t/*/v2 (2/minute) answers mismatch (-want +got):\n%s", diff)
	}
	// Without share_threshold each value has its own counter.
	got = []rlsv3.RateLimitResponse_Code{
		s.ask(t, "parity", 1, desc("path=/u/a/v2")).OverallCode,
		s.ask(t, "parity", 1, desc("path=/u/b/v2")).OverallCode,
		s.ask(t, "parity", 1, desc("path=/u/a/v2")).OverallCode,
	}
	if diff := cmp.Diff([]rlsv3.RateLimitResponse_Code{okc, okc, over}, got); diff != "" {
		t.Errorf("unshared /u/*/v2 (1/minute) answers mismatch (-want +got):\n%s", diff)
	}
}

func mustStruct(t *testing.T, m map[string]any) *structpb.Struct {
	t.Helper()
	s, err := structpb.NewStruct(m)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestResponseDynamicMetadata(t *testing.T) {
	cfg := testConfig(t, "memory", "parity.yaml")
	cfg.ResponseDynamicMetadata = true
	s := start(t, cfg)
	override := desc("svc=svc1")
	override.Limit = &ratelimitv3.RateLimitDescriptor_RateLimitOverride{RequestsPerUnit: 5, Unit: typev3.RateLimitUnit_MINUTE}
	tests := []struct {
		name string
		hits uint32
		ds   []*ratelimitv3.RateLimitDescriptor
		want map[string]any
	}{
		{"one rule", 0, []*ratelimitv3.RateLimitDescriptor{desc("svc=svc1")}, map[string]any{
			"domain":      "parity",
			"descriptors": []any{map[string]any{"entries": []any{"svc=svc1"}}},
			"metadata":    map[string]any{"name": "service_1", "route": map[string]any{"id": "r1", "tags": []any{"a"}}},
		}},
		{"first value wins, structs merged", 2, []*ratelimitv3.RateLimitDescriptor{desc("svc=svc1"), withHits(desc("svc=svc2"), 0)}, map[string]any{
			"domain": "parity",
			"descriptors": []any{
				map[string]any{"entries": []any{"svc=svc1"}},
				map[string]any{"entries": []any{"svc=svc2"}, "hitsAddend": 0},
			},
			"hitsAddend": 2,
			"metadata": map[string]any{"name": "service_1", "other": "x",
				"route": map[string]any{"id": "r1", "tags": []any{"a"}, "owner": "team-2"}},
		}},
		{"unlimited, no rule and override carry none", 0, []*ratelimitv3.RateLimitDescriptor{desc("free=x"), desc("nothing=y,more=z"), override}, map[string]any{
			"domain": "parity",
			"descriptors": []any{
				map[string]any{"entries": []any{"free=x"}},
				map[string]any{"entries": []any{"nothing=y", "more=z"}},
				map[string]any{"entries": []any{"svc=svc1"}, "limit": override.Limit.String()},
			},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := s.ask(t, "parity", tt.hits, tt.ds...)
			if diff := cmp.Diff(mustStruct(t, tt.want), r.DynamicMetadata, protocmp.Transform()); diff != "" {
				t.Errorf("dynamic_metadata mismatch (-want +got):\n%s", diff)
			}
		})
	}
	// A descriptor over its limit did not pass: its metadata is left out,
	// on the refusal too.
	s.ask(t, "parity", 1, desc("tight=a"))
	r := s.ask(t, "parity", 1, desc("tight=a"), desc("svc=svc2"))
	want := mustStruct(t, map[string]any{
		"domain":      "parity",
		"descriptors": []any{map[string]any{"entries": []any{"tight=a"}}, map[string]any{"entries": []any{"svc=svc2"}}},
		"hitsAddend":  1,
		"metadata":    map[string]any{"name": "service_2", "other": "x", "route": map[string]any{"id": "r2", "owner": "team-2"}},
	})
	if r.OverallCode != over {
		t.Fatalf("tight=a twice: %v, want OVER_LIMIT", r.OverallCode)
	}
	if diff := cmp.Diff(want, r.DynamicMetadata, protocmp.Transform()); diff != "" {
		t.Errorf("dynamic_metadata of a refusal mismatch (-want +got):\n%s", diff)
	}
}

func TestNoDynamicMetadataByDefault(t *testing.T) {
	s := start(t, testConfig(t, "memory", "parity.yaml"))
	if r := s.ask(t, "parity", 1, desc("svc=svc1")); r.DynamicMetadata != nil {
		t.Errorf("dynamic_metadata = %v, want none without -response-dynamic-metadata", r.DynamicMetadata)
	}
}

// writeDomainFiles writes two files of domain "merged" into cfg's
// configuration directory.
func writeDomainFiles(t *testing.T, cfg Config) {
	t.Helper()
	files := map[string]string{
		"merged-a.yaml": "domain: merged\ndescriptors:\n  - key: key1\n    value: value1\n    rate_limit: {unit: minute, requests_per_unit: 1, name: base}\n",
		"merged-b.yaml": "domain: merged\ndescriptors:\n  - key: key2\n    value: value2\n    rate_limit: {unit: minute, requests_per_unit: 2, replaces: [{name: base}]}\n",
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(cfg.ConfigPath, name), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func TestMergeDomainConfig(t *testing.T) {
	cfg := testConfig(t, "memory", "policy.yaml")
	writeDomainFiles(t, cfg)
	err := CheckConfig(cfg)
	if err == nil || !strings.Contains(err.Error(), "merged-b.yaml: duplicate domain 'merged' in config file (also in") ||
		!strings.Contains(err.Error(), "merged-a.yaml") {
		t.Errorf("CheckConfig(two files of one domain) = %v, want the duplicate domain naming both files", err)
	}
	cfg.MergeDomainConfig = true
	if err := CheckConfig(cfg); err != nil {
		t.Fatalf("CheckConfig(merge) = %v", err)
	}
	s := start(t, cfg)
	if diff := cmp.Diff([]rlsv3.RateLimitResponse_Code{okc, over}, answersOf(t, s, "merged", 2, desc("key1=value1"))); diff != "" {
		t.Errorf("key1 (first file, 1/minute) mismatch (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]rlsv3.RateLimitResponse_Code{okc, okc, over}, answersOf(t, s, "merged", 3, desc("key2=value2"))); diff != "" {
		t.Errorf("key2 (second file, 2/minute) mismatch (-want +got):\n%s", diff)
	}
	// key2's limit replaces key1's, defined in the other file.
	if r := s.ask(t, "merged", 1, desc("key1=value1"), desc("key2=value2")); r.OverallCode != over || r.Statuses[0].Code != okc {
		t.Errorf("key1 beside key2: %v %v, want key1 replaced (OK) and key2 over", r.OverallCode, r.Statuses)
	}
}

// Envoy Gateway's rendering of a RateLimitConfig loads and decides.
func TestGatewayShapedFile(t *testing.T) {
	cfg := testConfig(t, "memory", "policy.yaml")
	data, err := os.ReadFile(filepath.Join("rules", "testdata", "gateway.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(cfg.ConfigPath, "gateway.yaml"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	s := start(t, cfg)
	route := "httproute/default/backend/rule/0/match/0"
	d := desc(route + "=" + route + ",rule-0-match-0=x")
	if diff := cmp.Diff([]rlsv3.RateLimitResponse_Code{okc, okc, okc, over}, answersOf(t, s, "default/eg/http", 4, d)); diff != "" {
		t.Errorf("3/minute rule answers mismatch (-want +got):\n%s", diff)
	}
}

// A key that is not valid UTF-8 is INVALID_ARGUMENT (bad_key), not
// laundered into a key that matches no rule.
func TestInvalidUTF8KeyRefused(t *testing.T) {
	s := start(t, testConfig(t, "memory", "policy.yaml", "messaging.yaml"))
	conn, err := grpc.NewClient(s.svc.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.ForceCodec(rawCodec{})))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	call := func(entries ...[2]string) error {
		req := wireRequest("messaging", 1, entries...)
		return conn.Invoke(context.Background(), "/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit", &req, &rlsv3.RateLimitResponse{})
	}
	if err := call([2]string{"to_number\xff", "1"}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("key with an invalid byte: %v, want InvalidArgument", err)
	}
	if err := call([2]string{"to_number", "1"}, [2]string{"\xc3", "x"}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("second key with an invalid byte: %v, want InvalidArgument", err)
	}
	// The same key escaped by hand is a valid key: decided.
	if err := call([2]string{`to_number\xff`, "1"}); err != nil {
		t.Errorf("valid key spelling the escape: %v, want an answer", err)
	}
	if code, body := httpGet(t, "http://"+s.svc.HTTPAddr()+"/metrics"); code != 200 || !strings.Contains(body, `ratelimit_service_invalid_requests_total{reason="bad_key"} 2`) {
		t.Errorf("metrics lack two bad_key refusals: %d", code)
	}
}

func TestParityFlagsFromEnv(t *testing.T) {
	env := map[string]string{"LEAKY_MERGE_DOMAIN_CONFIG": "true", "LEAKY_RESPONSE_DYNAMIC_METADATA": "true"}
	cfg, err := LoadConfig(func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	if !cfg.MergeDomainConfig || !cfg.ResponseDynamicMetadata {
		t.Errorf("LoadConfig(env) merge, metadata = %v, %v; want both true", cfg.MergeDomainConfig, cfg.ResponseDynamicMetadata)
	}
}
