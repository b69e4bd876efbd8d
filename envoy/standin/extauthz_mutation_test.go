package standin

import (
	"context"
	"net/http"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/genproto/googleapis/rpc/code"
	"google.golang.org/genproto/googleapis/rpc/status"
)

// option is a HeaderValueOption with an append_action (append unset).
func option(k, v string, a corev3.HeaderValueOption_HeaderAppendAction) *corev3.HeaderValueOption {
	return &corev3.HeaderValueOption{Header: &corev3.HeaderValue{Key: k, Value: v}, AppendAction: a}
}

// legacy is a HeaderValueOption with the deprecated append set (it wins
// over append_action).
func legacy(k, v string, appendValue bool) *corev3.HeaderValueOption {
	return &corev3.HeaderValueOption{
		//lint:ignore SA1019 the deprecated field is what this test is about.
		Header: &corev3.HeaderValue{Key: k, Value: v}, Append: wrapBool(appendValue),
		AppendAction: corev3.HeaderValueOption_ADD_IF_ABSENT,
	}
}

// An OK answer's headers and response_headers_to_add follow append_action
// as Envoy applies them: with append unset, append_action decides (default
// APPEND_IF_EXISTS_OR_ADD); append true appends (to the request header's
// value, joined by ","; as another response header) and false overwrites.
func TestAuthzOKHeadersFollowAppendAction(t *testing.T) {
	h, rec := providerHarness(t, defaultFixture())
	rec.setHandler(func(w http.ResponseWriter, _ *http.Request) {
		for _, k := range []string{"X-R-Default", "X-R-Absent", "X-R-Overwrite", "X-R-Set", "X-R-True", "X-R-False"} {
			w.Header().Set(k, "up")
		}
	})
	const (
		appendOrAdd = corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD
		ifAbsent    = corev3.HeaderValueOption_ADD_IF_ABSENT
		ifExists    = corev3.HeaderValueOption_OVERWRITE_IF_EXISTS
		overwrite   = corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD
	)
	h.authz.setAnswer(func(context.Context, *authv3.CheckRequest) (*authv3.CheckResponse, error) {
		return &authv3.CheckResponse{Status: &status.Status{}, HttpResponse: &authv3.CheckResponse_OkResponse{OkResponse: &authv3.OkHttpResponse{
			Headers: []*corev3.HeaderValueOption{
				{Header: &corev3.HeaderValue{Key: "x-q-default", Value: "new"}},
				option("x-q-default-new", "new", appendOrAdd),
				option("x-q-absent", "new", ifAbsent), option("x-q-absent-new", "new", ifAbsent),
				option("x-q-overwrite", "new", ifExists), option("x-q-overwrite-new", "new", ifExists),
				option("x-q-set", "new", overwrite), option("x-q-set-new", "new", overwrite),
				legacy("x-q-true", "new", true), legacy("x-q-true-new", "new", true),
				legacy("x-q-false", "new", false),
			},
			ResponseHeadersToAdd: []*corev3.HeaderValueOption{
				{Header: &corev3.HeaderValue{Key: "x-r-default", Value: "new"}},
				option("x-r-absent", "new", ifAbsent), option("x-r-absent-new", "new", ifAbsent),
				option("x-r-overwrite", "new", ifExists), option("x-r-overwrite-new", "new", ifExists),
				option("x-r-set", "new", overwrite),
				legacy("x-r-true", "new", true), legacy("x-r-false", "new", false),
			},
		}}}, nil
	})
	sent := http.Header{}
	for _, k := range []string{"X-Q-Default", "X-Q-Absent", "X-Q-Overwrite", "X-Q-Set", "X-Q-True", "X-Q-False"} {
		sent.Set(k, "old")
	}
	resp, _ := h.do("GET", "/openai/v1/models", sent, "")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status = %d, want 200", resp.StatusCode)
	}
	up := rec.requests()[0].header
	for k, want := range map[string][]string{
		"X-Q-Default": {"old", "new"}, "X-Q-Default-New": {"new"},
		"X-Q-Absent": {"old"}, "X-Q-Absent-New": {"new"},
		"X-Q-Overwrite": {"new"}, "X-Q-Overwrite-New": nil,
		"X-Q-Set": {"new"}, "X-Q-Set-New": {"new"},
		"X-Q-True": {"old,new"}, "X-Q-True-New": {"new"}, "X-Q-False": {"new"},
	} {
		if got := up.Values(k); !cmp.Equal(got, want) {
			t.Errorf("upstream %s = %q, want %q", k, got, want)
		}
	}
	for k, want := range map[string][]string{
		"X-R-Default": {"up", "new"},
		"X-R-Absent":  {"up"}, "X-R-Absent-New": {"new"},
		"X-R-Overwrite": {"new"}, "X-R-Overwrite-New": nil,
		"X-R-Set": {"new"}, "X-R-True": {"up", "new"}, "X-R-False": {"new"},
	} {
		if got := resp.Header.Values(k); !cmp.Equal(got, want) {
			t.Errorf("client response %s = %q, want %q", k, got, want)
		}
	}
}

// A denied status that is not a final HTTP status is 403, as Envoy maps an
// invalid code. (A denial at 500 or above gets the local reply format, see
// jsonLocalReply.)
func TestAuthzDeniedStatusOutOfRangeIs403(t *testing.T) {
	h, _ := providerHarness(t, defaultFixture())
	for _, tc := range []struct {
		code typev3.StatusCode
		want int
	}{
		{0, 403}, {1, 403}, {99, 403}, {100, 403}, {199, 403}, {200, 200},
		{451, 451}, {599, 599}, {600, 403}, {1000, 403}, {-1, 403},
	} {
		h.authz.setAnswer(func(context.Context, *authv3.CheckRequest) (*authv3.CheckResponse, error) {
			return &authv3.CheckResponse{
				Status: &status.Status{Code: int32(code.Code_PERMISSION_DENIED)},
				HttpResponse: &authv3.CheckResponse_DeniedResponse{DeniedResponse: &authv3.DeniedHttpResponse{
					Status: &typev3.HttpStatus{Code: tc.code}, Body: "no",
				}},
			}, nil
		})
		wantBody := "no" // a denial below 500 is passed on as it came
		if tc.want >= 500 {
			wantBody = jsonReply("ext_authz_denied", "no", tc.want)
		}
		if resp, body := h.do("GET", "/openai/v1/models", nil, ""); resp.StatusCode != tc.want || body != wantBody {
			t.Errorf("denied with status %d: answer = %d %q, want %d %q", tc.code, resp.StatusCode, body, tc.want, wantBody)
		}
	}
}
