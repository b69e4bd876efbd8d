package standin

import (
	"strconv"
	"strings"
	"testing"
	"time"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// jsonLocalReply is the local_reply_config the translator generates
// (controlplane/translate, localReply): the JSON envelope for the gateway's
// own replies; the ratelimit service's 429 (RL) and authz's denials below
// 500 (UAEX) passed on as they came.
func jsonLocalReply() *hcmv3.LocalReplyConfig {
	keep := textFormat(opBody)
	return &hcmv3.LocalReplyConfig{
		Mappers: []*hcmv3.ResponseMapper{
			{Filter: flagsFilter(flagRateLimited), BodyFormatOverride: keep},
			{Filter: andFilter(flagsFilter(flagExtAuthz), statusFilter(accesslogv3.ComparisonFilter_LE, 499)), BodyFormatOverride: keep},
		},
		BodyFormat: jsonFormat(map[string]string{"error": opDetails, "message": opBody, "status": opStatus}),
	}
}

func textFormat(s string) *corev3.SubstitutionFormatString {
	return &corev3.SubstitutionFormatString{Format: &corev3.SubstitutionFormatString_TextFormatSource{
		TextFormatSource: &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: s}},
	}}
}

func jsonFormat(fields map[string]string) *corev3.SubstitutionFormatString {
	s := &structpb.Struct{Fields: map[string]*structpb.Value{}}
	for k, v := range fields {
		s.Fields[k] = structpb.NewStringValue(v)
	}
	return &corev3.SubstitutionFormatString{Format: &corev3.SubstitutionFormatString_JsonFormat{JsonFormat: s}}
}

func flagsFilter(flags ...string) *accesslogv3.AccessLogFilter {
	return &accesslogv3.AccessLogFilter{FilterSpecifier: &accesslogv3.AccessLogFilter_ResponseFlagFilter{
		ResponseFlagFilter: &accesslogv3.ResponseFlagFilter{Flags: flags},
	}}
}

func statusFilter(op accesslogv3.ComparisonFilter_Op, code uint32) *accesslogv3.AccessLogFilter {
	return &accesslogv3.AccessLogFilter{FilterSpecifier: &accesslogv3.AccessLogFilter_StatusCodeFilter{
		StatusCodeFilter: &accesslogv3.StatusCodeFilter{Comparison: &accesslogv3.ComparisonFilter{
			Op: op, Value: &corev3.RuntimeUInt32{DefaultValue: code},
		}},
	}}
}

func andFilter(fs ...*accesslogv3.AccessLogFilter) *accesslogv3.AccessLogFilter {
	return &accesslogv3.AccessLogFilter{FilterSpecifier: &accesslogv3.AccessLogFilter_AndFilter{
		AndFilter: &accesslogv3.AndFilter{Filters: fs},
	}}
}

// jsonReply is the body jsonLocalReply renders, as Envoy writes it: keys
// sorted, the status a number, a newline at the end.
func jsonReply(details, message string, status int) string {
	return `{"error":` + string(appendJSONString(nil, details)) + `,"message":` + string(appendJSONString(nil, message)) +
		`,"status":` + strconv.Itoa(status) + "}\n"
}

func TestLocalReplyFormat(t *testing.T) {
	generated, err := compileLocalReply(jsonLocalReply())
	if err != nil {
		t.Fatal(err)
	}
	custom, err := compileLocalReply(&hcmv3.LocalReplyConfig{
		Mappers: []*hcmv3.ResponseMapper{
			{Filter: statusFilter(accesslogv3.ComparisonFilter_EQ, 404), BodyFormatOverride: textFormat(opStatus)},
			{Filter: statusFilter(accesslogv3.ComparisonFilter_GE, 500)}, // no override: the body format
			{Filter: statusFilter(accesslogv3.ComparisonFilter_NE, 0), BodyFormatOverride: textFormat("refused")},
		},
		BodyFormat: func() *corev3.SubstitutionFormatString {
			f := jsonFormat(map[string]string{"code": opStatus, "kind": "gateway", "why": opDetails})
			f.ContentType = "application/problem+json"
			return f
		}(),
	})
	if err != nil {
		t.Fatal(err)
	}
	const text, js = "text/plain", "application/json"
	for _, tc := range []struct {
		name             string
		format           *localReplyFormat
		in               localReply
		wantBody, wantCT string
	}{
		{"no local_reply_config: the body as it is", nil,
			localReply{status: 503, body: "no healthy upstream", details: "no_healthy_upstream"}, "no healthy upstream", text},
		{"a reply Envoy sends without a body", generated,
			localReply{status: 404, details: "route_not_found", flag: flagNoRoute}, `{"error":"route_not_found","message":"","status":404}` + "\n", js},
		{"the body quoted, < > & as they are", generated,
			localReply{status: 503, body: "say \"no\" <now> & \\ \n", details: "x"}, `{"error":"x","message":"say \"no\" <now> & \\ \n","status":503}` + "\n", js},
		{"details not set are null", generated,
			localReply{status: 500}, `{"error":null,"message":"","status":500}` + "\n", js},
		{"the ratelimit service's 429 as it came", generated,
			localReply{status: 429, body: `{"error":"rate_limited"}`, details: "request_rate_limited", flag: flagRateLimited}, `{"error":"rate_limited"}`, text},
		{"the ratelimit service's 429 without a body stays empty", generated,
			localReply{status: 429, details: "request_rate_limited", flag: flagRateLimited}, "", text},
		{"authz's 403 as it came", generated,
			localReply{status: 403, body: `{"error":"forbidden"}`, details: "ext_authz_denied", flag: flagExtAuthz}, `{"error":"forbidden"}`, text},
		{"authz's 503 denial quoted (UAEX at 500 and above is formatted)", generated,
			localReply{status: 503, body: `{"error":"unavailable"}`, details: "ext_authz_denied", flag: flagExtAuthz},
			`{"error":"ext_authz_denied","message":"{\"error\":\"unavailable\"}","status":503}` + "\n", js},
		{"an ext_authz failure", generated,
			localReply{status: 503, details: "ext_authz_error", flag: flagExtAuthz}, jsonReply("ext_authz_error", "", 503), js},
		{"a ratelimit failure (RLSE is not RL)", generated,
			localReply{status: 503, details: "rate_limiter_error", flag: flagRateLimitError}, jsonReply("rate_limiter_error", "", 503), js},
		{"custom: the first mapper's text", custom, localReply{status: 404}, "404", text},
		{"custom: a mapper without a format uses the body format", custom,
			localReply{status: 502, details: "d"}, `{"code":502,"kind":"gateway","why":"d"}` + "\n", "application/problem+json"},
		{"custom: first match wins", custom, localReply{status: 401}, "refused", text},
	} {
		t.Run(tc.name, func(t *testing.T) {
			body, ct := tc.format.rewrite(&tc.in)
			if body != tc.wantBody || ct != tc.wantCT {
				t.Errorf("rewrite(%+v) = %q, %q; want %q, %q", tc.in, body, ct, tc.wantBody, tc.wantCT)
			}
		})
	}
}

// Every setting of local_reply_config outside what the stand-in
// implements is refused by name, the last good listener kept; without a
// local_reply_config the replies are Envoy's plain text.
func TestLocalReplyOutsideTheSubsetIsNACKed(t *testing.T) {
	h, _ := providerHarness(t, defaultFixture())
	edit := func(f func(*hcmv3.LocalReplyConfig)) func(*hcmv3.HttpConnectionManager) {
		return func(m *hcmv3.HttpConnectionManager) { f(m.LocalReplyConfig) }
	}
	for i, tc := range []struct {
		name string
		edit func(*hcmv3.HttpConnectionManager)
		want string
	}{
		{"another operator", edit(func(c *hcmv3.LocalReplyConfig) {
			c.BodyFormat.GetJsonFormat().Fields["message"] = structpb.NewStringValue("%REQ(x-leaky-user-id)%")
		}), `local_reply_config.body_format.json_format["message"]: "%REQ(x-leaky-user-id)%" is not implemented by the stand-in`},
		{"text around an operator", edit(func(c *hcmv3.LocalReplyConfig) {
			c.BodyFormat.GetJsonFormat().Fields["status"] = structpb.NewStringValue("code %RESPONSE_CODE%")
		}), `json_format["status"]: "code %RESPONSE_CODE%" is not implemented`},
		{"a number value", edit(func(c *hcmv3.LocalReplyConfig) {
			c.BodyFormat.GetJsonFormat().Fields["status"] = structpb.NewNumberValue(1)
		}), `local_reply_config.body_format.json_format.fields["status"]: field number_value is not implemented`},
		{"omit_empty_values", edit(func(c *hcmv3.LocalReplyConfig) { c.BodyFormat.OmitEmptyValues = true }),
			"local_reply_config.body_format: field omit_empty_values is not implemented"},
		{"the deprecated text_format", edit(func(c *hcmv3.LocalReplyConfig) {
			//lint:ignore SA1019 the deprecated field is what this case sends.
			c.Mappers[0].BodyFormatOverride = &corev3.SubstitutionFormatString{Format: &corev3.SubstitutionFormatString_TextFormat{TextFormat: opBody}}
		}), "local_reply_config.mappers[0].body_format_override: field text_format is not implemented"},
		{"a mapper's status rewrite", edit(func(c *hcmv3.LocalReplyConfig) { c.Mappers[0].StatusCode = wrapperspb.UInt32(500) }),
			"local_reply_config.mappers[0]: field status_code is not implemented"},
		{"a flag the stand-in never sets", edit(func(c *hcmv3.LocalReplyConfig) { c.Mappers[0].Filter = flagsFilter("URX") }),
			`local_reply_config.mappers[0].filter.response_flag_filter.flags[0]: flag "URX" is not implemented`},
		{"a runtime key", edit(func(c *hcmv3.LocalReplyConfig) {
			c.Mappers[1].Filter.GetAndFilter().Filters[1].GetStatusCodeFilter().Comparison.Value.RuntimeKey = "k"
		}), "and_filter.filters[1].status_code_filter.comparison.value: field runtime_key is not implemented"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h.xds.push("bad"+strconv.Itoa(i), h.fix, editHCM(t, tc.edit))
			// The NACK of this version is the one naming the field (an
			// earlier version's may still be on its way).
			last := ""
			for deadline := time.Now().Add(waitBound); !strings.Contains(last, tc.want); time.Sleep(20 * time.Millisecond) {
				if time.Now().After(deadline) {
					t.Fatalf("no listener NACK contains %q; the last: %q", tc.want, last)
				}
				if n := h.xds.nacks(resourcev3.ListenerType); len(n) > 0 {
					last = n[len(n)-1].GetErrorDetail().GetMessage()
				}
			}
			if v := h.appliedVersion("listener"); v != "v1" {
				t.Errorf("applied listener = %q, want v1 kept", v)
			}
		})
	}
	h.pushAndWait("plain", h.fix, editHCM(t, func(m *hcmv3.HttpConnectionManager) { m.LocalReplyConfig = nil }))
	resp, body := h.do("GET", "/api/v1/analytics/usage", nil, "")
	if resp.StatusCode != 503 || body != bodyNoHealthyUpstream || resp.Header.Get("Content-Type") != "text/plain" {
		t.Errorf("without local_reply_config: %d %q %q, want 503 text/plain %q", resp.StatusCode, resp.Header.Get("Content-Type"), body, bodyNoHealthyUpstream)
	}
}
