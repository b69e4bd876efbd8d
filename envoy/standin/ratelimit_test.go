package standin

import (
	"context"
	"errors"
	"net/http"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	ratelimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/leakytokens/leaky/internal/contract"
)

func descriptor(hits uint64, kv ...string) *ratelimitv3.RateLimitDescriptor {
	d := &ratelimitv3.RateLimitDescriptor{HitsAddend: wrapperspb.UInt64(hits)}
	for i := 0; i < len(kv); i += 2 {
		d.Entries = append(d.Entries, &ratelimitv3.RateLimitDescriptor_Entry{Key: kv[i], Value: kv[i+1]})
	}
	return d
}

func TestDescriptorsFromTheRouteActions(t *testing.T) {
	for _, tc := range []struct {
		name   string
		header http.Header
		want   []*ratelimitv3.RateLimitDescriptor
	}{
		{
			name:   "member of an org",
			header: http.Header{contract.HeaderOrg: {"acme"}},
			want: []*ratelimitv3.RateLimitDescriptor{
				descriptor(42, "provider", "openai", "tier", "free", "user", "u1"),
				descriptor(42, "provider", "openai", "org", "org-acme"),
				descriptor(42, "provider", "openai"),
			},
		},
		{
			name: "no org header: no org descriptor",
			want: []*ratelimitv3.RateLimitDescriptor{
				descriptor(42, "provider", "openai", "tier", "free", "user", "u1"),
				descriptor(42, "provider", "openai"),
			},
		},
		{
			name:   "a forged user id is not the descriptor's",
			header: http.Header{"X-Leaky-User-Id": {"mallory"}, "X-Leaky-Org-Id": {"evil"}},
			want: []*ratelimitv3.RateLimitDescriptor{
				descriptor(42, "provider", "openai", "tier", "free", "user", "u1"),
				descriptor(42, "provider", "openai"),
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, _ := providerHarness(t, defaultFixture())
			if resp, _ := h.do("POST", "/openai/v1/chat/completions", tc.header, `{}`); resp.StatusCode != 200 {
				t.Fatalf("status = %d, want 200", resp.StatusCode)
			}
			got := h.rls.requests()
			if len(got) != 1 {
				t.Fatalf("ShouldRateLimit calls = %d, want 1", len(got))
			}
			want := &rlsv3.RateLimitRequest{Domain: contract.Domain, Descriptors: tc.want}
			if d := cmp.Diff(want, got[0], protocmp.Transform()); d != "" {
				t.Errorf("RateLimitRequest (-want +got):\n%s", d)
			}
		})
	}
}

func TestHitsAddendNotANumberDropsTheDescriptor(t *testing.T) {
	h, rec := providerHarness(t, defaultFixture())
	h.authz.setAnswer(func(ctx context.Context, r *authv3.CheckRequest) (*authv3.CheckResponse, error) {
		resp, _ := identityOK(ctx, r)
		ok := resp.GetOkResponse()
		ok.Headers = append(ok.Headers, setHeader(contract.HeaderEstimate, "lots"))
		return resp, nil
	})
	if resp, _ := h.do("GET", "/openai/v1/models", nil, ""); resp.StatusCode != 200 {
		t.Fatalf("status = %d, want 200", resp.StatusCode)
	}
	if n := len(h.rls.requests()); n != 0 {
		t.Errorf("ShouldRateLimit called %d times with every descriptor dropped", n)
	}
	if len(rec.requests()) != 1 {
		t.Error("the request did not reach the upstream")
	}
}

func TestOverLimitIs429WithTheServiceAnswer(t *testing.T) {
	h, rec := providerHarness(t, defaultFixture())
	body := `{"error":"rate_limited","scope":"user","limit":100,"remaining":0,"retry_after_seconds":7}`
	h.rls.setAnswer(func(context.Context, *rlsv3.RateLimitRequest) (*rlsv3.RateLimitResponse, error) {
		return &rlsv3.RateLimitResponse{
			OverallCode: rlsv3.RateLimitResponse_OVER_LIMIT,
			Statuses: []*rlsv3.RateLimitResponse_DescriptorStatus{
				{Code: rlsv3.RateLimitResponse_OVER_LIMIT, LimitRemaining: 0, DurationUntilReset: durationpb.New(7 * time.Second),
					CurrentLimit: &rlsv3.RateLimitResponse_RateLimit{RequestsPerUnit: 100, Unit: rlsv3.RateLimitResponse_RateLimit_MINUTE, Name: "user"}},
				{Code: rlsv3.RateLimitResponse_OK, LimitRemaining: 900, DurationUntilReset: durationpb.New(time.Second),
					CurrentLimit: &rlsv3.RateLimitResponse_RateLimit{RequestsPerUnit: 1000, Unit: rlsv3.RateLimitResponse_RateLimit_HOUR}},
			},
			ResponseHeadersToAdd: []*corev3.HeaderValue{{Key: "retry-after", Value: "7"}, {Key: "content-type", Value: "application/json"}},
			RawBody:              []byte(body),
		}, nil
	})
	resp, got := h.do("POST", "/openai/v1/chat/completions", nil, `{}`)
	if resp.StatusCode != http.StatusTooManyRequests || got != body {
		t.Fatalf("answer = %d %q, want 429 with the service's body", resp.StatusCode, got)
	}
	want := map[string]string{
		"Retry-After": "7", "Content-Type": "application/json", "X-Envoy-Ratelimited": "true",
		"X-Ratelimit-Limit": `100, 100;w=60;name="user", 1000;w=3600`, "X-Ratelimit-Remaining": "0", "X-Ratelimit-Reset": "7",
		"X-Authz-Said": "ok",
	}
	for k, v := range want {
		if resp.Header.Get(k) != v {
			t.Errorf("%s = %q, want %q", k, resp.Header.Get(k), v)
		}
	}
	if len(rec.requests()) != 0 {
		t.Error("an over-limit request reached the upstream")
	}
}

func TestRateLimitOKHeaders(t *testing.T) {
	h, rec := providerHarness(t, defaultFixture())
	h.rls.setAnswer(func(context.Context, *rlsv3.RateLimitRequest) (*rlsv3.RateLimitResponse, error) {
		return &rlsv3.RateLimitResponse{
			OverallCode: rlsv3.RateLimitResponse_OK,
			Statuses: []*rlsv3.RateLimitResponse_DescriptorStatus{{Code: rlsv3.RateLimitResponse_OK, LimitRemaining: 58,
				DurationUntilReset: durationpb.New(2 * time.Second), CurrentLimit: &rlsv3.RateLimitResponse_RateLimit{RequestsPerUnit: 100, Unit: rlsv3.RateLimitResponse_RateLimit_SECOND}}},
			ResponseHeadersToAdd: []*corev3.HeaderValue{{Key: "ratelimit", Value: "limit=100, remaining=58"}},
			RequestHeadersToAdd:  []*corev3.HeaderValue{{Key: "x-reservation", Value: "r1"}},
		}, nil
	})
	resp, _ := h.do("POST", "/openai/v1/chat/completions", nil, `{}`)
	if resp.StatusCode != 200 || resp.Header.Get("Ratelimit") != "limit=100, remaining=58" ||
		resp.Header.Get("X-Ratelimit-Remaining") != "58" || resp.Header.Get("X-Ratelimit-Limit") != "100, 100;w=1" {
		t.Errorf("answer = %d %v", resp.StatusCode, resp.Header)
	}
	if got := rec.requests()[0].header.Get("X-Reservation"); got != "r1" {
		t.Errorf("upstream x-reservation = %q, want r1", got)
	}
}

func TestRateLimitErrorFollowsFailureMode(t *testing.T) {
	for _, tc := range []struct {
		name       string
		deny       bool
		answer     func(context.Context, *rlsv3.RateLimitRequest) (*rlsv3.RateLimitResponse, error)
		wantStatus int
	}{
		{"error, deny", true, rlsFailing, http.StatusServiceUnavailable},
		{"error, allow", false, rlsFailing, http.StatusOK},
		{"timeout, deny", true, rlsSlow, http.StatusServiceUnavailable},
		{"timeout, allow", false, rlsSlow, http.StatusOK},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := defaultFixture()
			f.rlFailureDeny = tc.deny
			f.rlTimeout = 200 * time.Millisecond
			h, rec := providerHarness(t, f)
			h.rls.setAnswer(tc.answer)
			resp, _ := h.do("POST", "/openai/v1/chat/completions", nil, `{}`)
			if resp.StatusCode != tc.wantStatus {
				t.Errorf("status = %d, want %d", resp.StatusCode, tc.wantStatus)
			}
			if reached := len(rec.requests()) > 0; reached == tc.deny {
				t.Errorf("upstream reached = %v with failure_mode_deny %v", reached, tc.deny)
			}
		})
	}
}

func rlsFailing(context.Context, *rlsv3.RateLimitRequest) (*rlsv3.RateLimitResponse, error) {
	return nil, errors.New("ratelimit is broken")
}

// rlsSlow answers after the caller has given up, with an error: an OK
// sent as the server's copy of the deadline fires can beat the client's
// own timer on a loaded machine.
func rlsSlow(ctx context.Context, _ *rlsv3.RateLimitRequest) (*rlsv3.RateLimitResponse, error) {
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-time.After(waitBound):
	}
	return &rlsv3.RateLimitResponse{OverallCode: rlsv3.RateLimitResponse_OK}, nil
}

func TestRoutesWithoutRateLimitsMakeNoCall(t *testing.T) {
	rec := newRecorder(t)
	f := defaultFixture()
	f.endpoints["leaky-ratelimit-http"] = []string{rec.addr()}
	h := newHarness(t, f)
	h.pushAndWait("v1", h.fix, nil)
	if resp, _ := h.do("GET", "/api/v1/tokens/balance", nil, ""); resp.StatusCode != 200 {
		t.Fatalf("status = %d, want 200", resp.StatusCode)
	}
	if len(h.authz.requests()) != 1 || len(h.rls.requests()) != 0 {
		t.Errorf("Check %d, ShouldRateLimit %d; want 1 and 0", len(h.authz.requests()), len(h.rls.requests()))
	}
}

// A descriptor value from a header that is not UTF-8 is sanitised as
// Envoy does, so that the RateLimitRequest can be marshalled.
func TestDescriptorValuesAreValidUTF8(t *testing.T) {
	rules := []rateLimitRule{{actions: []headerAction{{header: "x-team", key: "team"}}}}
	got := (&pipeline{}).descriptors(rules, http.Header{"X-Team": {"a\xffb"}})
	want := []*ratelimitv3.RateLimitDescriptor{{Entries: []*ratelimitv3.RateLimitDescriptor_Entry{{Key: "team", Value: "a!b"}}}}
	if d := cmp.Diff(want, got, protocmp.Transform()); d != "" {
		t.Errorf("descriptors (-want +got):\n%s", d)
	}
}

// Envoy treats every overall code but OVER_LIMIT as OK, UNKNOWN included:
// the request goes on, even with failure_mode_deny, with the answer's
// headers applied.
func TestRateLimitUnknownCodeIsOK(t *testing.T) {
	f := defaultFixture()
	f.rlFailureDeny = true
	h, rec := providerHarness(t, f)
	h.rls.setAnswer(func(context.Context, *rlsv3.RateLimitRequest) (*rlsv3.RateLimitResponse, error) {
		return &rlsv3.RateLimitResponse{
			OverallCode:          rlsv3.RateLimitResponse_UNKNOWN,
			RequestHeadersToAdd:  []*corev3.HeaderValue{{Key: "x-rls-said", Value: "unknown"}},
			ResponseHeadersToAdd: []*corev3.HeaderValue{{Key: "x-rls-told", Value: "client"}},
		}, nil
	})
	resp, _ := h.do("POST", "/openai/v1/chat/completions", nil, `{}`)
	if resp.StatusCode != http.StatusOK || resp.Header.Get("X-Rls-Told") != "client" {
		t.Errorf("answer = %d %v, want 200 with x-rls-told", resp.StatusCode, resp.Header)
	}
	if up := rec.requests(); len(up) != 1 || up[0].header.Get("X-Rls-Said") != "unknown" {
		t.Errorf("upstream got %+v, want one request with x-rls-said", up)
	}
}
