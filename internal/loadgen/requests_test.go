package loadgen

import (
	"context"
	"net"
	"strconv"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/google/go-cmp/cmp"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/testing/protocmp"

	"github.com/leakytokens/leaky/internal/contract"
)

func TestRateLimitRequests(t *testing.T) {
	tests := []struct {
		name string
		in   RateLimitOptions
		want []*rlsv3.RateLimitRequest
	}{
		{"defaults, one descriptor", RateLimitOptions{Keys: 2}, []*rlsv3.RateLimitRequest{
			{Domain: contract.Domain, HitsAddend: 1, Descriptors: descriptors([]string{contract.KeyProvider, "openai", contract.KeyTier, "free", contract.KeyUser, "lg-0"})},
			{Domain: contract.Domain, HitsAddend: 1, Descriptors: descriptors([]string{contract.KeyProvider, "openai", contract.KeyTier, "free", contract.KeyUser, "lg-1"})},
		}},
		{"three descriptors", RateLimitOptions{Keys: 1, Descriptors: 3, Provider: "qwen", Tier: "pro", KeyPrefix: "u", Hits: 250, Domain: "d"},
			[]*rlsv3.RateLimitRequest{{Domain: "d", HitsAddend: 250, Descriptors: descriptors(
				[]string{contract.KeyProvider, "qwen", contract.KeyTier, "pro", contract.KeyUser, "u0"},
				[]string{contract.KeyProvider, "qwen", contract.KeyOrg, "u0"},
				[]string{contract.KeyProvider, "qwen"},
			)}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.in.Requests()
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got, protocmp.Transform()); diff != "" {
				t.Errorf("Requests() mismatch (-want +got):\n%s", diff)
			}
		})
	}
	if n := len(mustRequests(t, RateLimitOptions{})); n != 10000 {
		t.Errorf("len(Requests()) with defaults = %d, want 10000", n)
	}
}

func mustRequests(t *testing.T, o RateLimitOptions) []*rlsv3.RateLimitRequest {
	t.Helper()
	r, err := o.Requests()
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestRateLimitOptionsValidate(t *testing.T) {
	tests := []struct {
		name string
		in   RateLimitOptions
		want []string
	}{
		{"zero value", RateLimitOptions{}, nil},
		{"bad", RateLimitOptions{Keys: -1, Descriptors: 2}, []string{"keys: must be at least 1", "descriptors 2: must be 1 or 3"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, errLines(tt.in.Validate())); diff != "" {
				t.Errorf("Validate(%+v) mismatch (-want +got):\n%s", tt.in, diff)
			}
		})
	}
}

func TestAuthzRequest(t *testing.T) {
	d := DefaultAuthzOptions()
	base := map[string]string{
		":method": "POST", ":path": d.Path, ":authority": d.Host, ":scheme": "http",
		"content-type": "application/json", "content-length": strconv.Itoa(len(d.Body)),
	}
	with := func(k, v string) map[string]string {
		m := map[string]string{k: v}
		for k, v := range base {
			m[k] = v
		}
		return m
	}
	tests := []struct {
		name    string
		in      AuthzOptions
		headers map[string]string
	}{
		{"bearer", AuthzOptions{Token: "tok"}, with("authorization", "Bearer tok")},
		{"api key", AuthzOptions{APIKey: "lt_x_y"}, with("x-api-key", "lt_x_y")},
		{"no credential", AuthzOptions{}, base},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.in.Request()
			if err != nil {
				t.Fatal(err)
			}
			h := got.GetAttributes().GetRequest().GetHttp()
			if diff := cmp.Diff(tt.headers, h.GetHeaders()); diff != "" {
				t.Errorf("Request() headers mismatch (-want +got):\n%s", diff)
			}
			if h.GetPath() != d.Path || h.GetMethod() != "POST" || h.GetBody() != d.Body || h.GetSize() != int64(len(d.Body)) {
				t.Errorf("Request() = path %q method %q body %q size %d, want the defaults", h.GetPath(), h.GetMethod(), h.GetBody(), h.GetSize())
			}
		})
	}
	if _, err := (AuthzOptions{Token: "a", APIKey: "b"}).Request(); err == nil {
		t.Error("Request() with token and api key: error = nil, want one")
	}
}

// fakeAuthz allows requests with the bearer token "good" and denies the
// rest with 401.
type fakeAuthz struct {
	authv3.UnimplementedAuthorizationServer
}

func (fakeAuthz) Check(_ context.Context, req *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	if req.GetAttributes().GetRequest().GetHttp().GetHeaders()["authorization"] == "Bearer good" {
		return &authv3.CheckResponse{Status: &rpcstatus.Status{}, HttpResponse: &authv3.CheckResponse_OkResponse{
			OkResponse: &authv3.OkHttpResponse{Headers: []*corev3.HeaderValueOption{{Header: &corev3.HeaderValue{Key: contract.HeaderUserID, Value: "u"}}}},
		}}, nil
	}
	return &authv3.CheckResponse{Status: &rpcstatus.Status{Code: int32(codes.Unauthenticated)}, HttpResponse: &authv3.CheckResponse_DeniedResponse{
		DeniedResponse: &authv3.DeniedHttpResponse{Status: &typev3.HttpStatus{Code: typev3.StatusCode_Unauthorized}},
	}}, nil
}

func TestAuthzOverGRPC(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	authv3.RegisterAuthorizationServer(srv, fakeAuthz{})
	go func() { _ = srv.Serve(lis) }()
	defer srv.Stop()
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()

	tests := []struct {
		name string
		in   AuthzOptions
		want map[string]int64
	}{
		{"allowed", AuthzOptions{Token: "good"}, map[string]int64{"OK": 50}},
		{"denied", AuthzOptions{APIKey: "bad"}, map[string]int64{"DENIED_401": 50}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			target, err := NewAuthz(conn, tt.in)
			if err != nil {
				t.Fatal(err)
			}
			res := Run(t.Context(), Options{Concurrency: 4, Count: 50}, target.Do)
			if res.Count != 50 || res.Errors != nil {
				t.Errorf("Run = count %d, errors %v, want 50, none", res.Count, res.Errors)
			}
			if diff := cmp.Diff(tt.want, target.Answers()); diff != "" {
				t.Errorf("Answers() mismatch (-want +got):\n%s", diff)
			}
		})
	}
}
