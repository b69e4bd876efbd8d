package standin

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/genproto/googleapis/rpc/code"
	"google.golang.org/genproto/googleapis/rpc/status"

	"github.com/leakytokens/leaky/controlplane/model"
)

// deadAddr is a local address nothing listens on.
func deadAddr(t *testing.T) string {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	lis.Close()
	return addr
}

func denyWith(s typev3.StatusCode, body string, headers ...*corev3.HeaderValueOption) func(context.Context, *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	return func(context.Context, *authv3.CheckRequest) (*authv3.CheckResponse, error) {
		return &authv3.CheckResponse{
			Status: &status.Status{Code: int32(code.Code_PERMISSION_DENIED)},
			HttpResponse: &authv3.CheckResponse_DeniedResponse{DeniedResponse: &authv3.DeniedHttpResponse{
				Status: &typev3.HttpStatus{Code: s}, Headers: headers, Body: body,
			}},
		}, nil
	}
}

func overLimit(body string, headers ...*corev3.HeaderValue) func(context.Context, *rlsv3.RateLimitRequest) (*rlsv3.RateLimitResponse, error) {
	return func(context.Context, *rlsv3.RateLimitRequest) (*rlsv3.RateLimitResponse, error) {
		return &rlsv3.RateLimitResponse{OverallCode: rlsv3.RateLimitResponse_OVER_LIMIT,
			ResponseHeadersToAdd: headers, RawBody: []byte(body)}, nil
	}
}

func rlsOK(context.Context, *rlsv3.RateLimitRequest) (*rlsv3.RateLimitResponse, error) {
	return &rlsv3.RateLimitResponse{OverallCode: rlsv3.RateLimitResponse_OK}, nil
}

// get is a raw HTTP/1.1 GET of path with extra header lines.
func get(path string, headerLines ...string) string {
	return "GET " + path + " HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n" + strings.Join(headerLines, "") + "\r\n"
}

// Every reply the gateway makes itself is the configuration's JSON
// envelope with Envoy's response code details and text; authz's denials
// below 500, the ratelimit service's 429 and a provider's own answer reach
// the client as they were sent.
func TestLocalRepliesAreJSON(t *testing.T) {
	openai := newRecorder(t)
	f := defaultFixture()
	f.rlFailureDeny = true
	f.endpoints[model.ProviderService("openai")] = []string{openai.addr()}
	f.endpoints[model.ProviderService("qwen")] = []string{deadAddr(t)} // gemini: no endpoint at all
	h := newHarness(t, f)
	h.pushAndWait("v1", h.fix, nil)
	jsonBody := setHeader("content-type", "application/json")
	const js = "application/json"
	for _, tc := range []struct {
		name     string
		setup    func()
		request  string
		status   int
		ct, body string
	}{
		{"no route", nil, get("/nowhere"), 404, js, jsonReply("route_not_found", "", 404)},
		{"an escaped slash", nil, get("/openai/v1/a%2fb"), 400, js, jsonReply("path_normalization_failed", "", 400)},
		{"a fragment", nil, get("/openai/v1/models#x"), 400, js, jsonReply("path_normalization_failed", "", 400)},
		{"HTTP/1.0", nil, "GET /openai/v1/models HTTP/1.0\r\nHost: gw\r\n\r\n", 426, js, jsonReply("low_version", "", 426)},
		{"headers over max_request_headers_kb", nil, get("/openai/v1/models", "X-Big: "+strings.Repeat("a", 64<<10)+"\r\n"),
			431, js, jsonReply("http1.headers_too_large", "Request Header Fields Too Large", 431)},
		{"no healthy upstream", nil, get("/gemini/v1/models"), 503, js, jsonReply("no_healthy_upstream", bodyNoHealthyUpstream, 503)},
		{"connection refused, retries spent", nil, get("/qwen/v1/models"), 503, js, jsonReply(
			"upstream_reset_before_response_started{remote_connection_failure}",
			"upstream connect error or disconnect/reset before headers. retried and the latest reset reason: remote connection failure", 503)},
		{"ext_authz failure", func() { h.authz.setAnswer(failing) }, get("/openai/v1/models"), 503, js, jsonReply("ext_authz_error", "", 503)},
		{"ratelimit failure", func() { h.rls.setAnswer(rlsFailing) }, get("/openai/v1/models"), 503, js, jsonReply("rate_limiter_error", "", 503)},
		{"authz's 503 denial, quoted", func() {
			h.authz.setAnswer(denyWith(typev3.StatusCode_ServiceUnavailable, `{"error":"unavailable"}`, jsonBody))
		},
			get("/openai/v1/models"), 503, js, jsonReply("ext_authz_denied", `{"error":"unavailable"}`, 503)},

		{"authz's 403 as sent", func() {
			h.authz.setAnswer(denyWith(typev3.StatusCode_Forbidden, `{"error":"forbidden_org"}`, jsonBody))
		},
			get("/openai/v1/models"), 403, js, `{"error":"forbidden_org"}`},
		{"authz's 401 without a content type gets Envoy's text/plain", func() { h.authz.setAnswer(denyWith(typev3.StatusCode_Unauthorized, "who are you")) },
			get("/openai/v1/models"), 401, "text/plain", "who are you"},
		{"the ratelimit 429 as sent", func() {
			h.rls.setAnswer(overLimit(`{"error":"rate_limited","scope":"user"}`, &corev3.HeaderValue{Key: "content-type", Value: js}))
		}, get("/openai/v1/models"), 429, js, `{"error":"rate_limited","scope":"user"}`},
		{"the ratelimit 429 without a body stays empty", func() { h.rls.setAnswer(overLimit("")) }, get("/openai/v1/models"), 429, "", ""},
		{"a provider's own error", func() {
			openai.setHandler(func(w http.ResponseWriter, _ *http.Request) {
				w.Header().Set("Content-Type", js)
				w.WriteHeader(http.StatusBadRequest)
				io.WriteString(w, `{"error":{"message":"no such model"}}`)
			})
		}, get("/openai/v1/models"), 400, js, `{"error":{"message":"no such model"}}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h.authz.setAnswer(identityOK)
			h.rls.setAnswer(rlsOK)
			if tc.setup != nil {
				tc.setup()
			}
			resp, body := h.raw(tc.request)
			if resp.StatusCode != tc.status || resp.Header.Get("Content-Type") != tc.ct || body != tc.body {
				t.Errorf("answer = %d %q %q, want %d %q %q", resp.StatusCode, resp.Header.Get("Content-Type"), body, tc.status, tc.ct, tc.body)
			}
		})
	}
}

// Before the first configuration there is no local_reply_config to format
// a reply: the listener answers 503 with the house's JSON error all the
// same.
func TestNoConfigurationYetIsJSON(t *testing.T) {
	gw := startGateway(t, deadAddr(t), nil)
	client := &http.Client{Timeout: waitBound}
	resp, err := client.Get("http://" + gw.Addr() + "/openai/v1/models")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var got struct {
		Error, Message string
		Status         int
	}
	if err := json.NewDecoder(resp.Body).Decode(&got); err != nil {
		t.Fatalf("the body is not JSON: %v", err)
	}
	if resp.StatusCode != 503 || resp.Header.Get("Content-Type") != "application/json" || got.Error != "unavailable" || got.Message == "" || got.Status != 503 {
		t.Errorf("answer = %d %q %+v, want 503 application/json with error unavailable, a message and status 503 (the local replies' shape)", resp.StatusCode, resp.Header.Get("Content-Type"), got)
	}
}
