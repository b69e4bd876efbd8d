package standin

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"strings"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"golang.org/x/net/http/httpguts"
)

// localReply is an answer the gateway makes itself (Envoy's
// sendLocalReply): the status, the headers of the filter that refused (an
// ext_authz denial's, the ratelimit service's), the body Envoy would send
// (%LOCAL_REPLY_BODY%), Envoy's response code details
// (%RESPONSE_CODE_DETAILS%) and the response flag Envoy sets before
// replying ("" none). The connection manager's local_reply_config then
// decides what the client gets (see localReplyFormat.rewrite).
type localReply struct {
	status  int
	header  http.Header
	body    string
	details string
	flag    string
}

// The response flags (Envoy's short names) the stand-in sets on its local
// replies, each where Envoy sets it; a mapper's response_flag_filter may
// name only these (another would silently never match).
const (
	flagNoRoute           = "NR"
	flagNoHealthyUpstream = "UH"
	flagUpstreamTimeout   = "UT"
	flagOverflow          = "UO"
	flagConnectFailure    = "UF"
	flagConnTermination   = "UC"
	flagStreamIdleTimeout = "SI"
	flagExtAuthz          = "UAEX" // denied, or failed with status_on_error
	flagRateLimited       = "RL"   // the ratelimit service said OVER_LIMIT
	flagRateLimitError    = "RLSE" // the ratelimit call failed (failure_mode_deny)
)

func trackedFlags() []string {
	return []string{flagNoRoute, flagNoHealthyUpstream, flagUpstreamTimeout, flagOverflow, flagConnectFailure,
		flagConnTermination, flagStreamIdleTimeout, flagExtAuthz, flagRateLimited, flagRateLimitError}
}

// The command operators a body format may use, each alone in a value.
const (
	opBody    = "%LOCAL_REPLY_BODY%"
	opStatus  = "%RESPONSE_CODE%"
	opDetails = "%RESPONSE_CODE_DETAILS%"
)

// Envoy's content types of a body format without content_type.
const (
	contentTypeText = "text/plain"
	contentTypeJSON = "application/json"
)

// localReplyFormat is a compiled local_reply_config: the mappers, tried in
// order, then the body format. A nil *localReplyFormat (no
// local_reply_config) is Envoy's default: the body as it is, text/plain.
type localReplyFormat struct {
	mappers []replyMapper
	body    *bodyFormat // nil: the body as it is
}

// replyMapper is a ResponseMapper: a filter and the body format it picks
// (nil: the config's).
type replyMapper struct {
	match  func(*localReply) bool
	format *bodyFormat
}

// bodyFormat is a compiled SubstitutionFormatString: a JSON object (its
// fields sorted by key, as Envoy writes them) or one text value.
type bodyFormat struct {
	isJSON      bool
	fields      []jsonField
	text        formatValue
	contentType string
}

type jsonField struct {
	key   string
	value formatValue
}

// formatValue is literal text (op "") or exactly one command operator.
type formatValue struct {
	literal string
	op      string
}

// rewrite is Envoy's LocalReply::rewrite: the first mapper that matches
// picks its body format (or, having none, the config's), which renders the
// body; contentType is the format's.
func (c *localReplyFormat) rewrite(lr *localReply) (body, contentType string) {
	if c == nil {
		return lr.body, contentTypeText
	}
	f := c.body
	for _, m := range c.mappers {
		if m.match(lr) {
			if m.format != nil {
				f = m.format
			}
			break
		}
	}
	if f == nil {
		return lr.body, contentTypeText
	}
	return f.render(lr), f.contentType
}

// render is the body as Envoy's formatters write it: a JSON object is
// compact, with its keys sorted, a value that is exactly %RESPONSE_CODE% as
// a number, and a newline at the end.
func (f *bodyFormat) render(lr *localReply) string {
	if !f.isJSON {
		return f.text.text(lr)
	}
	b := []byte{'{'}
	for i, fl := range f.fields {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendJSONString(b, fl.key)
		b = append(b, ':')
		b = fl.value.appendJSON(b, lr)
	}
	return string(append(b, '}', '\n'))
}

func (v formatValue) text(lr *localReply) string {
	switch v.op {
	case opBody:
		return lr.body
	case opStatus:
		return strconv.Itoa(lr.status)
	case opDetails:
		if lr.details == "" {
			return "-" // Envoy's text for a value that is not set
		}
		return lr.details
	}
	return v.literal
}

func (v formatValue) appendJSON(b []byte, lr *localReply) []byte {
	switch {
	case v.op == opStatus:
		return strconv.AppendInt(b, int64(lr.status), 10)
	case v.op == opDetails && lr.details == "":
		return append(b, "null"...)
	}
	return appendJSONString(b, v.text(lr))
}

// appendJSONString appends s as a JSON string, without Go's HTML escaping
// (Envoy writes <, > and & as they are).
func appendJSONString(b []byte, s string) []byte {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(s) // a string always encodes
	return append(b, bytes.TrimSuffix(buf.Bytes(), []byte{'\n'})...)
}

// compileLocalReply compiles the local_reply_config the allow-list let
// through (mappers with filter and body_format_override; filters
// response_flag, status_code and and; formats json_format with string
// values, text_format_source inline, content_type). Nil: Envoy's default.
func compileLocalReply(c *hcmv3.LocalReplyConfig) (*localReplyFormat, error) {
	if c == nil {
		return nil, nil
	}
	out := &localReplyFormat{}
	if c.GetBodyFormat() != nil {
		f, err := compileBodyFormat(c.GetBodyFormat(), "local_reply_config.body_format")
		if err != nil {
			return nil, err
		}
		out.body = f
	}
	for i, m := range c.GetMappers() {
		path := fmt.Sprintf("local_reply_config.mappers[%d]", i)
		match, err := compileReplyFilter(m.GetFilter(), path+".filter")
		if err != nil {
			return nil, err
		}
		rm := replyMapper{match: match}
		if m.GetBodyFormatOverride() != nil {
			if rm.format, err = compileBodyFormat(m.GetBodyFormatOverride(), path+".body_format_override"); err != nil {
				return nil, err
			}
		}
		out.mappers = append(out.mappers, rm)
	}
	return out, nil
}

func compileBodyFormat(s *corev3.SubstitutionFormatString, path string) (*bodyFormat, error) {
	var out *bodyFormat
	switch {
	case s.GetJsonFormat() != nil:
		out = &bodyFormat{isJSON: true, contentType: contentTypeJSON}
		fields := s.GetJsonFormat().GetFields()
		for _, k := range slices.Sorted(maps.Keys(fields)) {
			v, err := parseFormatValue(fields[k].GetStringValue(), fmt.Sprintf("%s.json_format[%q]", path, k))
			if err != nil {
				return nil, err
			}
			out.fields = append(out.fields, jsonField{key: k, value: v})
		}
	case s.GetTextFormatSource() != nil:
		v, err := parseFormatValue(s.GetTextFormatSource().GetInlineString(), path+".text_format_source.inline_string")
		if err != nil {
			return nil, err
		}
		out = &bodyFormat{text: v, contentType: contentTypeText}
	default:
		return nil, fmt.Errorf("%s: json_format or text_format_source is required", path)
	}
	if ct := s.GetContentType(); ct != "" {
		if !httpguts.ValidHeaderFieldValue(ct) {
			return nil, fmt.Errorf("%s.content_type %q: not a valid header value", path, ct)
		}
		out.contentType = ct
	}
	return out, nil
}

// parseFormatValue accepts literal text (no %) or exactly one of the three
// operators; any other use of Envoy's substitution format is refused.
func parseFormatValue(s, path string) (formatValue, error) {
	if !strings.Contains(s, "%") {
		return formatValue{literal: s}, nil
	}
	switch s {
	case opBody, opStatus, opDetails:
		return formatValue{op: s}, nil
	}
	return formatValue{}, fmt.Errorf("%s: %q is %w (a value is literal text or exactly one of %s, %s, %s)",
		path, s, errNotImplemented, opBody, opStatus, opDetails)
}

// compileReplyFilter is an access-log filter over a local reply: its
// response flag, its status, or all of several.
func compileReplyFilter(f *accesslogv3.AccessLogFilter, path string) (func(*localReply) bool, error) {
	switch {
	case f.GetResponseFlagFilter() != nil:
		return flagMatch(f.GetResponseFlagFilter().GetFlags(), path+".response_flag_filter.flags")
	case f.GetStatusCodeFilter() != nil:
		return statusMatch(f.GetStatusCodeFilter().GetComparison(), path+".status_code_filter.comparison")
	case f.GetAndFilter() != nil:
		subs := f.GetAndFilter().GetFilters()
		if len(subs) < 2 {
			return nil, fmt.Errorf("%s.and_filter.filters: at least two are required", path)
		}
		var all []func(*localReply) bool
		for i, sub := range subs {
			m, err := compileReplyFilter(sub, fmt.Sprintf("%s.and_filter.filters[%d]", path, i))
			if err != nil {
				return nil, err
			}
			all = append(all, m)
		}
		return func(lr *localReply) bool {
			for _, m := range all {
				if !m(lr) {
					return false
				}
			}
			return true
		}, nil
	}
	return nil, fmt.Errorf("%s: a filter is required", path)
}

func flagMatch(flags []string, path string) (func(*localReply) bool, error) {
	if len(flags) == 0 {
		return nil, fmt.Errorf("%s: an empty list (any flag) is %w", path, errNotImplemented)
	}
	set := map[string]bool{}
	for i, fl := range flags {
		if !slices.Contains(trackedFlags(), fl) {
			return nil, fmt.Errorf("%s[%d]: flag %q is %w (it sets %s)", path, i, fl, errNotImplemented, strings.Join(trackedFlags(), ", "))
		}
		set[fl] = true
	}
	return func(lr *localReply) bool { return set[lr.flag] }, nil
}

func statusMatch(c *accesslogv3.ComparisonFilter, path string) (func(*localReply) bool, error) {
	if c.GetValue() == nil {
		return nil, fmt.Errorf("%s.value is required", path)
	}
	want := int64(c.GetValue().GetDefaultValue())
	switch c.GetOp() {
	case accesslogv3.ComparisonFilter_EQ:
		return func(lr *localReply) bool { return int64(lr.status) == want }, nil
	case accesslogv3.ComparisonFilter_GE:
		return func(lr *localReply) bool { return int64(lr.status) >= want }, nil
	case accesslogv3.ComparisonFilter_LE:
		return func(lr *localReply) bool { return int64(lr.status) <= want }, nil
	case accesslogv3.ComparisonFilter_NE:
		return func(lr *localReply) bool { return int64(lr.status) != want }, nil
	}
	return nil, fmt.Errorf("%s.op %s is %w", path, c.GetOp(), errNotImplemented)
}
