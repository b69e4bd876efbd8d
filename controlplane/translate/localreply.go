package translate

import (
	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/types/known/structpb"
)

// The local reply body: every answer the gateway makes itself (a path it
// refuses, no route, no healthy upstream, a timeout, an ext_authz or
// ratelimit failure) is the house's JSON error envelope with the status
// beside it, rendered by Envoy's json_format, which sorts the keys, renders
// a value that is exactly %RESPONSE_CODE% as a number and ends with a
// newline:
//
//	{"error":"no_healthy_upstream","message":"no healthy upstream","status":503}
//
// "error" is Envoy's response code details (route_not_found,
// response_timeout, ext_authz_error, rate_limiter_error,
// upstream_reset_before_response_started{…}, …), "message" the text Envoy
// would have sent (empty for the replies Envoy sends without a body).
const (
	opDetails = "%RESPONSE_CODE_DETAILS%"
	opBody    = "%LOCAL_REPLY_BODY%"
	opStatus  = "%RESPONSE_CODE%"
)

// Response flags (Envoy's short names) the local reply mappers match.
const (
	flagRateLimited       = "RL"   // the ratelimit filter's 429 (OVER_LIMIT)
	flagUnauthorizedExtSv = "UAEX" // an ext_authz denial, or its failure
)

// localReply is the connection manager's local_reply_config. Envoy formats
// every local reply with body_format, also the ones a filter makes from a
// service's answer, whose body would end up quoted into "message". Two
// mappers, tried first, pass those on as they came (text "%LOCAL_REPLY_BODY%"
// keeps the body, and Envoy keeps the content type the service set):
//   - flag RL: the ratelimit service's 429 with its JSON body;
//   - flag UAEX below 500: authz's own denials (401, 403, 400, 411, 415).
//
// UAEX is also the flag of an ext_authz failure (status_on_error, a 5xx,
// no body), which must get the JSON envelope; no access-log filter tells
// the two apart, so the status does. The one casualty is authz's own 503
// denial (its store is down): its JSON body arrives quoted in "message".
func localReply() *hcmv3.LocalReplyConfig {
	keep := &corev3.SubstitutionFormatString{Format: &corev3.SubstitutionFormatString_TextFormatSource{
		TextFormatSource: &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: opBody}},
	}}
	return &hcmv3.LocalReplyConfig{
		Mappers: []*hcmv3.ResponseMapper{
			{Filter: flagFilter(flagRateLimited), BodyFormatOverride: keep},
			{Filter: &accesslogv3.AccessLogFilter{FilterSpecifier: &accesslogv3.AccessLogFilter_AndFilter{AndFilter: &accesslogv3.AndFilter{
				Filters: []*accesslogv3.AccessLogFilter{flagFilter(flagUnauthorizedExtSv), statusAtMost(499)},
			}}}, BodyFormatOverride: keep},
		},
		BodyFormat: &corev3.SubstitutionFormatString{Format: &corev3.SubstitutionFormatString_JsonFormat{
			JsonFormat: &structpb.Struct{Fields: map[string]*structpb.Value{
				"error":   structpb.NewStringValue(opDetails),
				"message": structpb.NewStringValue(opBody),
				"status":  structpb.NewStringValue(opStatus),
			}},
		}},
	}
}

// flagFilter matches a reply with the response flag set.
func flagFilter(flag string) *accesslogv3.AccessLogFilter {
	return &accesslogv3.AccessLogFilter{FilterSpecifier: &accesslogv3.AccessLogFilter_ResponseFlagFilter{
		ResponseFlagFilter: &accesslogv3.ResponseFlagFilter{Flags: []string{flag}},
	}}
}

// statusAtMost matches a reply whose status is at most code.
func statusAtMost(code uint32) *accesslogv3.AccessLogFilter {
	return &accesslogv3.AccessLogFilter{FilterSpecifier: &accesslogv3.AccessLogFilter_StatusCodeFilter{
		StatusCodeFilter: &accesslogv3.StatusCodeFilter{Comparison: &accesslogv3.ComparisonFilter{
			Op: accesslogv3.ComparisonFilter_LE, Value: &corev3.RuntimeUInt32{DefaultValue: code},
		}},
	}}
}
