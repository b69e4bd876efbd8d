package ratelimit

import (
	"context"
	"math"
	"strings"
	"testing"

	ratelimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Every malformed or extreme request has a defined answer and never panics.
func TestMalformedRequests(t *testing.T) {
	s := start(t, testConfig(t, "memory", "policy.yaml", "messaging.yaml"))
	many := make([]*ratelimitv3.RateLimitDescriptor, 65)
	for i := range many {
		many[i] = desc("provider=openai")
	}
	longValue := strings.Repeat("v", 10<<10)
	tests := []struct {
		name     string
		req      *rlsv3.RateLimitRequest
		wantCode codes.Code                   // gRPC code; OK means an answer
		wantRL   rlsv3.RateLimitResponse_Code // when wantCode is OK
	}{
		{"empty domain", &rlsv3.RateLimitRequest{Descriptors: []*ratelimitv3.RateLimitDescriptor{desc("a=b")}}, codes.InvalidArgument, 0},
		{"no descriptors", &rlsv3.RateLimitRequest{Domain: "leaky-tokens"}, codes.InvalidArgument, 0},
		{"65 descriptors", &rlsv3.RateLimitRequest{Domain: "leaky-tokens", Descriptors: many}, codes.InvalidArgument, 0},
		{"descriptor without entries", &rlsv3.RateLimitRequest{Domain: "leaky-tokens", Descriptors: []*ratelimitv3.RateLimitDescriptor{{}}}, codes.InvalidArgument, 0},
		{"empty key", &rlsv3.RateLimitRequest{Domain: "leaky-tokens", Descriptors: []*ratelimitv3.RateLimitDescriptor{desc("=x")}}, codes.InvalidArgument, 0},
		{"key of 300 bytes", &rlsv3.RateLimitRequest{Domain: "messaging", Descriptors: []*ratelimitv3.RateLimitDescriptor{desc(strings.Repeat("k", 300) + "=x")}}, codes.InvalidArgument, 0},
		{"unknown domain", &rlsv3.RateLimitRequest{Domain: "nope", Descriptors: []*ratelimitv3.RateLimitDescriptor{desc("a=b")}}, codes.OK, rlsv3.RateLimitResponse_OK},
		{"no rule in leaky-tokens", &rlsv3.RateLimitRequest{Domain: "leaky-tokens", Descriptors: []*ratelimitv3.RateLimitDescriptor{desc("colour=blue")}}, codes.OK, rlsv3.RateLimitResponse_OK},
		{"provider without a pool", &rlsv3.RateLimitRequest{Domain: "leaky-tokens", Descriptors: []*ratelimitv3.RateLimitDescriptor{desc("provider=unknown")}}, codes.OK, rlsv3.RateLimitResponse_OK},
		{"10 kB user value", &rlsv3.RateLimitRequest{Domain: "leaky-tokens", Descriptors: []*ratelimitv3.RateLimitDescriptor{desc("provider=openai,tier=free,user=" + longValue)}}, codes.OK, rlsv3.RateLimitResponse_OK},
		{"hits 1e9", &rlsv3.RateLimitRequest{Domain: "leaky-tokens", HitsAddend: 1e9, Descriptors: []*ratelimitv3.RateLimitDescriptor{desc("provider=openai,tier=free,user=dave")}}, codes.OK, rlsv3.RateLimitResponse_OVER_LIMIT},
		{"descriptor hits max uint64", &rlsv3.RateLimitRequest{Domain: "leaky-tokens", Descriptors: []*ratelimitv3.RateLimitDescriptor{withHits(desc("provider=openai,tier=free,user=erin"), math.MaxUint64)}}, codes.OK, rlsv3.RateLimitResponse_OVER_LIMIT},
		{"override with unknown unit", &rlsv3.RateLimitRequest{Domain: "messaging", Descriptors: []*ratelimitv3.RateLimitDescriptor{{
			Entries: []*ratelimitv3.RateLimitDescriptor_Entry{{Key: "to_number", Value: "1"}},
			Limit:   &ratelimitv3.RateLimitDescriptor_RateLimitOverride{RequestsPerUnit: 1, Unit: 99},
		}}}, codes.OK, rlsv3.RateLimitResponse_OK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, err := s.client.ShouldRateLimit(context.Background(), tt.req)
			if got := status.Code(err); got != tt.wantCode {
				t.Fatalf("code = %v (%v), want %v", got, err, tt.wantCode)
			}
			if err == nil && resp.OverallCode != tt.wantRL {
				t.Errorf("overall = %v, want %v", resp.OverallCode, tt.wantRL)
			}
			if err == nil && len(resp.Statuses) != len(tt.req.Descriptors) {
				t.Errorf("%d statuses for %d descriptors", len(resp.Statuses), len(tt.req.Descriptors))
			}
		})
	}
	// A request larger than the gRPC bound is refused by the transport.
	big := &rlsv3.RateLimitRequest{Domain: "leaky-tokens"}
	for i := 0; i < 40; i++ {
		big.Descriptors = append(big.Descriptors, desc("provider=openai,tier=free,user="+longValue))
	}
	if _, err := s.client.ShouldRateLimit(context.Background(), big); status.Code(err) != codes.ResourceExhausted {
		t.Errorf("400 kB request: %v, want ResourceExhausted", err)
	}
	if code, body := httpGet(t, "http://"+s.svc.HTTPAddr()+"/metrics"); code != 200 || !strings.Contains(body, `ratelimit_service_invalid_requests_total{reason="empty_domain"} 1`) {
		t.Errorf("metrics lack the invalid-request count: %d", code)
	}
}

func TestHitsAddend(t *testing.T) {
	s := start(t, testConfig(t, "memory", "policy.yaml"))
	u := "provider=openai,tier=free,user=frank"
	// Request-level 0 counts as 1 (envoyproxy/ratelimit's rule).
	if r := s.ask(t, "leaky-tokens", 0, desc(u)); r.Statuses[0].LimitRemaining != 999 {
		t.Errorf("request hits 0: remaining %d, want 999", r.Statuses[0].LimitRemaining)
	}
	// A descriptor's own hits_addend wins; 0 checks without charging.
	if r := s.ask(t, "leaky-tokens", 500, withHits(desc(u), 0)); r.Statuses[0].LimitRemaining != 999 || r.OverallCode != rlsv3.RateLimitResponse_OK {
		t.Errorf("descriptor hits 0: %v remaining %d, want OK 999", r.OverallCode, r.Statuses[0].LimitRemaining)
	}
	if r := s.ask(t, "leaky-tokens", 500, withHits(desc(u), 99)); r.Statuses[0].LimitRemaining != 900 {
		t.Errorf("descriptor hits 99: remaining %d, want 900", r.Statuses[0].LimitRemaining)
	}
	// More than the capacity can never be admitted: no Retry-After, -1 in the body.
	r := s.ask(t, "leaky-tokens", 1001, desc(u))
	if r.OverallCode != rlsv3.RateLimitResponse_OVER_LIMIT || header(r, "retry-after") != "" || !strings.Contains(string(r.RawBody), `"retry_after_seconds":-1`) {
		t.Errorf("1001 of 1000: %v retry-after %q body %s", r.OverallCode, header(r, "retry-after"), r.RawBody)
	}
}

// Domains in envoyproxy/ratelimit's format decide on fixed windows with its
// matching rules.
func TestEnvoyRatelimitDomain(t *testing.T) {
	for _, kind := range []string{"memory", "redis"} {
		t.Run(kind, func(t *testing.T) {
			s := start(t, testConfig(t, kind, "policy.yaml", "messaging.yaml"))
			codes := func(d string, n int) []rlsv3.RateLimitResponse_Code {
				var out []rlsv3.RateLimitResponse_Code
				for i := 0; i < n; i++ {
					out = append(out, s.ask(t, "messaging", 1, desc(d)).OverallCode)
				}
				return out
			}
			ok, over := rlsv3.RateLimitResponse_OK, rlsv3.RateLimitResponse_OVER_LIMIT
			check := func(name string, got []rlsv3.RateLimitResponse_Code, want ...rlsv3.RateLimitResponse_Code) {
				t.Helper()
				for i := range want {
					if got[i] != want[i] {
						t.Errorf("%s: answers %v, want %v", name, got, want)
						return
					}
				}
			}
			check("to_number 2/minute", codes("to_number=123", 3), ok, ok, over)
			check("nested marketing 3/day", codes("message_type=marketing,to_number=456", 4), ok, ok, ok, over)
			check("shadow mode", codes("shadow=x", 3), ok, ok, ok)
			check("unlimited", codes("free=x", 3), ok, ok, ok)
			check("zero per unit", codes("blocked=x", 1), over)
			// A zero limit refuses the whole request, charges nothing, and
			// explains itself; the other buckets are reported as they are.
			r := s.ask(t, "messaging", 1, desc("blocked=x"), desc("to_number=zero"))
			if r.OverallCode != over || r.Statuses[0].Code != over || r.Statuses[1].Code != ok || r.Statuses[1].LimitRemaining != 2 {
				t.Errorf("zero limit beside a counter: %v %v", r.OverallCode, r.Statuses)
			}
			if !strings.Contains(string(r.RawBody), `"retry_after_seconds":-1`) || header(r, "retry-after") != "" {
				t.Errorf("zero limit answer: body %s retry-after %q", r.RawBody, header(r, "retry-after"))
			}
			// An override with an invalid unit is ignored for its descriptor
			// only: the other descriptor is still limited.
			bad := &ratelimitv3.RateLimitDescriptor{
				Entries: []*ratelimitv3.RateLimitDescriptor_Entry{{Key: "to_number", Value: "999"}},
				Limit:   &ratelimitv3.RateLimitDescriptor_RateLimitOverride{RequestsPerUnit: 5, Unit: 0},
			}
			var answers []rlsv3.RateLimitResponse_Code
			for i := 0; i < 3; i++ {
				answers = append(answers, s.ask(t, "messaging", 1, desc("to_number=555"), bad).OverallCode)
			}
			check("bad override beside a limited descriptor", answers, ok, ok, over)

			r = s.ask(t, "messaging", 1, desc("free=y"))
			if r.Statuses[0].LimitRemaining != math.MaxUint32 {
				t.Errorf("unlimited remaining = %d, want MaxUint32", r.Statuses[0].LimitRemaining)
			}
			r = s.ask(t, "messaging", 1, desc("to_number=789"))
			if st := r.Statuses[0]; st.CurrentLimit.GetRequestsPerUnit() != 2 || st.CurrentLimit.GetUnit() != rlsv3.RateLimitResponse_RateLimit_MINUTE || st.LimitRemaining != 1 {
				t.Errorf("status = %v", st)
			}
			if d := r.Statuses[0].DurationUntilReset.AsDuration().Seconds(); d <= 0 || d > 60 {
				t.Errorf("duration until reset = %vs, want within the minute", d)
			}
		})
	}
}
