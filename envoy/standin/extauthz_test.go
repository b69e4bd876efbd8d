package standin

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"
	"google.golang.org/genproto/googleapis/rpc/code"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/leakytokens/leaky/controlplane/model"
	"github.com/leakytokens/leaky/internal/contract"
)

// providerHarness is a harness whose openai provider is rec.
func providerHarness(t *testing.T, f fixture) (*harness, *recorder) {
	rec := newRecorder(t)
	f.endpoints[model.ProviderService("openai")] = []string{rec.addr()}
	h := newHarness(t, f)
	h.pushAndWait("v1", h.fix, nil)
	return h, rec
}

func TestCheckRequestIsWhatEnvoySends(t *testing.T) {
	f := defaultFixture()
	f.maxBody = 16
	h, rec := providerHarness(t, f)
	body := `{"model":"gpt-4o","messages":[]}` // 32 bytes: cut at 16
	resp, _ := h.do("POST", "/openai/v1/chat/completions?x=1", http.Header{
		"X-Custom":      {"a", "b"},
		"Content-Type":  {"application/json"},
		"X-Request-Id":  {"req-1"},
		"Authorization": {"Bearer tok"},
	}, body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status = %d, want 200", resp.StatusCode)
	}
	got := h.authz.requests()
	if len(got) != 1 {
		t.Fatalf("Check calls = %d, want 1", len(got))
	}
	hr := got[0].GetAttributes().GetRequest().GetHttp()
	want := map[string]string{
		":authority": h.gw.Addr(), ":path": "/openai/v1/chat/completions?x=1", ":method": "POST", ":scheme": "http",
		"x-custom": "a,b", "content-type": "application/json", "authorization": "Bearer tok",
		"content-length": "32", "x-forwarded-proto": "http", "x-envoy-auth-partial-body": "true",
		"user-agent": "Go-http-client/1.1", "accept-encoding": "gzip",
		"x-forwarded-for": "127.0.0.1", "x-envoy-external-address": "127.0.0.1",
	}
	// The client's request id is replaced by a fresh one (an edge request).
	id := hr.GetHeaders()["x-request-id"]
	if u, err := uuid.Parse(id); err != nil || u.Version() != 4 || id == "req-1" {
		t.Errorf("x-request-id = %q, want a fresh UUIDv4", id)
	}
	want["x-request-id"] = id
	if d := cmp.Diff(want, hr.GetHeaders()); d != "" {
		t.Errorf("CheckRequest headers (-want +got):\n%s", d)
	}
	if string(hr.GetRawBody()) != body[:16] {
		t.Errorf("raw_body = %q, want %q", hr.GetRawBody(), body[:16])
	}
	if hr.GetId() != id || hr.GetMethod() != "POST" || hr.GetPath() != "/openai/v1/chat/completions?x=1" ||
		hr.GetHost() != h.gw.Addr() || hr.GetScheme() != "http" || hr.GetProtocol() != "HTTP/1.1" {
		t.Errorf("CheckRequest http = %v", hr)
	}
	if src := got[0].GetAttributes().GetSource().GetAddress().GetSocketAddress(); src.GetAddress() != "127.0.0.1" || src.GetPortValue() == 0 {
		t.Errorf("source address = %v, want 127.0.0.1 with a port", src)
	}
	if dst := got[0].GetAttributes().GetDestination().GetAddress().GetSocketAddress(); dst.GetAddress() != "127.0.0.1" {
		t.Errorf("destination address = %v", dst)
	}
	// The whole body still reaches the upstream, and the API key does not.
	up := rec.requests()
	if len(up) != 1 || up[0].body != body {
		t.Fatalf("upstream got %+v, want the whole body", up)
	}
}

func TestCheckRequestWholeBodyIsNotPartial(t *testing.T) {
	h, _ := providerHarness(t, defaultFixture())
	h.do("POST", "/openai/v1/chat/completions", nil, `{"a":1}`)
	hr := h.authz.requests()[0].GetAttributes().GetRequest().GetHttp()
	if string(hr.GetRawBody()) != `{"a":1}` || hr.GetHeaders()["x-envoy-auth-partial-body"] != "false" {
		t.Errorf("raw_body %q, partial %q; want the body and false", hr.GetRawBody(), hr.GetHeaders()["x-envoy-auth-partial-body"])
	}
	h.do("GET", "/openai/v1/models", nil, "")
	hr = h.authz.requests()[1].GetAttributes().GetRequest().GetHttp()
	if _, ok := hr.GetHeaders()["x-envoy-auth-partial-body"]; ok || hr.GetRawBody() != nil {
		t.Errorf("a request without a body got raw_body %q and headers %v", hr.GetRawBody(), hr.GetHeaders())
	}
}

func TestForgedLeakyHeadersNeverReachAuthzOrUpstream(t *testing.T) {
	h, rec := providerHarness(t, defaultFixture())
	forged := http.Header{
		"X-Leaky-User-Id": {"mallory"}, "X_leaky_tier": {"enterprise"}, "X-Leaky_estimate": {"1"},
		"X-Leaky-Org-Id": {"evil"}, "X-Leaky-Orgx": {"1"}, "X-Leaky-": {"1"}, "X_leaky_org": {"evil"},
		"X-Leaky-Org": {"acme"}, contract.HeaderAPIKey: {"lt_secret"},
	}
	h.do("POST", "/openai/v1/chat/completions", forged, `{}`)
	sent := h.authz.requests()[0].GetAttributes().GetRequest().GetHttp().GetHeaders()
	for k := range sent {
		if strings.HasPrefix(strings.ReplaceAll(k, "_", "-"), "x-leaky-") && k != contract.HeaderOrg {
			t.Errorf("ext_authz saw the client's %s", k)
		}
	}
	if sent[contract.HeaderOrg] != "acme" {
		t.Errorf("ext_authz saw x-leaky-org %q, want acme (the one a client may send)", sent[contract.HeaderOrg])
	}
	up := rec.requests()[0].header
	want := map[string]string{
		contract.HeaderUserID: "u1", contract.HeaderTier: "free", contract.HeaderEstimate: "42",
		contract.HeaderOrgID: "org-acme", contract.HeaderOrg: "acme", contract.HeaderProvider: "openai",
	}
	for k, v := range want {
		if got := up.Values(k); len(got) != 1 || got[0] != v {
			t.Errorf("upstream %s = %q, want [%q]", k, got, v)
		}
	}
	for _, k := range []string{"X_leaky_tier", "X-Leaky_estimate", "X-Leaky-Orgx", "X_leaky_org", contract.HeaderAPIKey} {
		if v := up.Values(k); len(v) > 0 {
			t.Errorf("upstream got %s: %q", k, v)
		}
	}
}

func TestAuthzOKAppliesMutations(t *testing.T) {
	h, rec := providerHarness(t, defaultFixture())
	h.authz.setAnswer(func(context.Context, *authv3.CheckRequest) (*authv3.CheckResponse, error) {
		return &authv3.CheckResponse{Status: &status.Status{}, HttpResponse: &authv3.CheckResponse_OkResponse{OkResponse: &authv3.OkHttpResponse{
			Headers: []*corev3.HeaderValueOption{
				setHeader("x-set", "new"),
				{Header: &corev3.HeaderValue{Key: "x-append", Value: "two"}, Append: wrapBool(true)},
			},
			HeadersToRemove:         []string{"x-drop"},
			ResponseHeadersToAdd:    []*corev3.HeaderValueOption{setHeader("x-to-client", "yes")},
			QueryParametersToSet:    []*corev3.QueryParameter{{Key: "q", Value: "2"}},
			QueryParametersToRemove: []string{"gone"},
		}}}, nil
	})
	resp, _ := h.do("GET", "/openai/v1/models?q=1&gone=x&keep=y", http.Header{"X-Set": {"old"}, "X-Append": {"one"}, "X-Drop": {"1"}}, "")
	if resp.Header.Get("X-To-Client") != "yes" {
		t.Errorf("client response x-to-client = %q, want yes", resp.Header.Get("X-To-Client"))
	}
	up := rec.requests()[0]
	if got := up.header.Values("X-Set"); !cmp.Equal(got, []string{"new"}) {
		t.Errorf("upstream x-set = %q, want [new]", got)
	}
	if got := up.header.Values("X-Append"); !cmp.Equal(got, []string{"one,two"}) {
		t.Errorf("upstream x-append = %q, want [one,two]", got)
	}
	if up.header.Get("X-Drop") != "" {
		t.Error("upstream got x-drop")
	}
	if up.uri != "/v1/models?keep=y&q=2" {
		t.Errorf("upstream uri = %q, want /v1/models?keep=y&q=2", up.uri)
	}
}

func TestAuthzDenied(t *testing.T) {
	h, rec := providerHarness(t, defaultFixture())
	h.authz.setAnswer(func(context.Context, *authv3.CheckRequest) (*authv3.CheckResponse, error) {
		return &authv3.CheckResponse{
			Status: &status.Status{Code: int32(code.Code_UNAUTHENTICATED)},
			HttpResponse: &authv3.CheckResponse_DeniedResponse{DeniedResponse: &authv3.DeniedHttpResponse{
				Status:  &typev3.HttpStatus{Code: typev3.StatusCode_Unauthorized},
				Headers: []*corev3.HeaderValueOption{setHeader("content-type", "application/json"), setHeader("www-authenticate", "Bearer")},
				Body:    `{"error":"unauthenticated"}`,
			}},
		}, nil
	})
	resp, body := h.do("POST", "/openai/v1/chat/completions", nil, `{}`)
	if resp.StatusCode != 401 || body != `{"error":"unauthenticated"}` || resp.Header.Get("Content-Type") != "application/json" ||
		resp.Header.Get("Www-Authenticate") != "Bearer" {
		t.Errorf("denied answer = %d %v %q", resp.StatusCode, resp.Header, body)
	}
	if len(rec.requests()) != 0 || len(h.rls.requests()) != 0 {
		t.Error("a denied request reached ratelimit or the upstream")
	}
	// A non-OK status without a denied response is a 403.
	h.authz.setAnswer(func(context.Context, *authv3.CheckRequest) (*authv3.CheckResponse, error) {
		return &authv3.CheckResponse{Status: &status.Status{Code: int32(code.Code_PERMISSION_DENIED)}}, nil
	})
	if resp, _ := h.do("GET", "/openai/v1/models", nil, ""); resp.StatusCode != 403 {
		t.Errorf("bare denial status = %d, want 403", resp.StatusCode)
	}
}

func TestAuthzErrorFollowsFailureMode(t *testing.T) {
	for _, tc := range []struct {
		name       string
		allow      bool
		answer     func(context.Context, *authv3.CheckRequest) (*authv3.CheckResponse, error)
		wantStatus int
	}{
		{"error, deny", false, failing, http.StatusServiceUnavailable},
		{"error, allow", true, failing, http.StatusOK},
		{"timeout, deny", false, slow, http.StatusServiceUnavailable},
		{"timeout, allow", true, slow, http.StatusOK},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := defaultFixture()
			f.authzFailureAllow = tc.allow
			f.authzTimeout = 200 * time.Millisecond
			h, rec := providerHarness(t, f)
			h.authz.setAnswer(tc.answer)
			resp, _ := h.do("GET", "/openai/v1/models", nil, "")
			if resp.StatusCode != tc.wantStatus {
				t.Errorf("status = %d, want %d", resp.StatusCode, tc.wantStatus)
			}
			if reached := len(rec.requests()) > 0; reached != tc.allow {
				t.Errorf("upstream reached = %v, want %v", reached, tc.allow)
			}
		})
	}
}

func failing(context.Context, *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	return nil, errors.New("authz is broken")
}

// slow answers after the context ends (the gateway's 200 ms timeout) or a
// bound far above it.
// slow answers after the caller has given up: never OK within its deadline
// (an OK sent when the server's copy of the deadline fires can beat the
// client's own timer on a loaded machine, so it answers the error then).
func slow(ctx context.Context, r *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-time.After(waitBound):
	}
	return identityOK(ctx, r)
}

func TestAuthzDisabledRoutesSkipCheck(t *testing.T) {
	rec := newRecorder(t)
	f := defaultFixture()
	f.endpoints[model.ServiceAuthzHTTP] = []string{rec.addr()}
	h := newHarness(t, f)
	h.pushAndWait("v1", h.fix, nil)
	for _, p := range []string{"/api/v1/auth/login", "/oauth2/token", "/.well-known/jwks.json"} {
		if resp, _ := h.do("GET", p, nil, ""); resp.StatusCode != 200 {
			t.Errorf("GET %s = %d, want 200", p, resp.StatusCode)
		}
	}
	if n := len(h.authz.requests()); n != 0 {
		t.Errorf("ext_authz called %d times on its own routes", n)
	}
	if n := len(rec.requests()); n != 3 {
		t.Errorf("authz-http got %d requests, want 3", n)
	}
}

func wrapBool(v bool) *wrapperspb.BoolValue { return wrapperspb.Bool(v) }

// A header value or a query that is not UTF-8 reaches ext_authz with every
// invalid byte replaced by '!', as Envoy sanitises what it sends over gRPC
// (a raw one would fail to marshal, and failure_mode_allow would let the
// request through unchecked).
func TestCheckRequestIsValidUTF8(t *testing.T) {
	h, rec := providerHarness(t, defaultFixture())
	resp, _ := h.raw("GET /openai/v1/models?q=\xff\xfe&r=caf\xc3\xa9 HTTP/1.1\r\nHost: gw\r\nX-Foo: a\xffb\r\nX-Bar: id\xc0\r\nConnection: close\r\n\r\n")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status = %d, want 200", resp.StatusCode)
	}
	got := h.authz.requests()
	if len(got) != 1 {
		t.Fatalf("Check calls = %d, want 1", len(got))
	}
	hr := got[0].GetAttributes().GetRequest().GetHttp()
	const wantPath = "/openai/v1/models?q=!!&r=caf\u00e9"
	if hr.GetPath() != wantPath || hr.GetHeaders()[":path"] != wantPath {
		t.Errorf("path = %q, :path = %q; want %q", hr.GetPath(), hr.GetHeaders()[":path"], wantPath)
	}
	if v := hr.GetHeaders()["x-foo"]; v != "a!b" {
		t.Errorf("x-foo = %q, want %q", v, "a!b")
	}
	if v := hr.GetHeaders()["x-bar"]; v != "id!" {
		t.Errorf("x-bar = %q, want %q", v, "id!")
	}
	if len(h.rls.requests()) != 1 {
		t.Errorf("ShouldRateLimit calls = %d, want 1", len(h.rls.requests()))
	}
	// Only the gRPC message is sanitised: the upstream gets the bytes sent.
	if up := rec.requests(); len(up) != 1 || up[0].header.Get("X-Foo") != "a\xffb" {
		t.Errorf("upstream got %+v, want x-foo as sent", up)
	}
}

// With no route Envoy's ext_authz filter skips the check, and the router
// answers 404.
func TestNoRouteSkipsTheCheck(t *testing.T) {
	h, _ := providerHarness(t, defaultFixture())
	h.authz.setAnswer(failing)
	resp, body := h.rawGet("/nowhere")
	if want := jsonReply("route_not_found", "", 404); resp.StatusCode != http.StatusNotFound || body != want {
		t.Errorf("answer = %d %q, want 404 %q", resp.StatusCode, body, want)
	}
	if n := len(h.authz.requests()); n != 0 {
		t.Errorf("Check calls = %d, want 0", n)
	}
}
