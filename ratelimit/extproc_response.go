package ratelimit

import (
	"strconv"
	"strings"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
)

// responseHeaders notes the response's status and how its body carries the
// usage. A response without a body ends here. When the metering will strip
// a chunk from an SSE body, content-length is removed (a provider rarely
// sends one with a stream).
func (x *exchange) responseHeaders(h *extprocv3.HttpHeaders) *extprocv3.ProcessingResponse {
	if x.id == "" {
		return continueHeaders(false, nil)
	}
	hs := headerMap(h.GetHeaders())
	x.status, _ = strconv.Atoi(hs[":status"])
	if x.status == 0 {
		x.status = 200 // Envoy always sends :status; a peer that did not sent nothing to judge it by
	}
	mode := modeJSON
	if strings.Contains(strings.ToLower(hs["content-type"]), "text/event-stream") {
		mode = modeSSE
	}
	x.reader = newUsageReader(mode, x.strip)
	if h.GetEndOfStream() {
		x.ended = true
		return continueHeaders(false, nil)
	}
	if x.reader.strip && hs["content-length"] != "" {
		return continueHeaders(false, &extprocv3.HeaderMutation{RemoveHeaders: []string{"content-length"}})
	}
	return continueHeaders(false, nil)
}

// responseBody reads one response chunk (STREAMED) and answers with the
// bytes the client gets in its place: the chunk itself, or, when the
// injected usage chunk is stripped, the complete events it finished.
func (x *exchange) responseBody(b *extprocv3.HttpBody) *extprocv3.ProcessingResponse {
	var mut *extprocv3.BodyMutation
	if x.id != "" && x.reader != nil && !x.done {
		out, changed := x.reader.feed(b.GetBody(), b.GetEndOfStream())
		switch {
		case !changed:
		case len(out) == 0:
			mut = &extprocv3.BodyMutation{Mutation: &extprocv3.BodyMutation_ClearBody{ClearBody: true}}
		default:
			mut = &extprocv3.BodyMutation{Mutation: &extprocv3.BodyMutation_Body{Body: out}}
		}
		x.ended = x.ended || b.GetEndOfStream()
	}
	return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ResponseBody{
		ResponseBody: &extprocv3.BodyResponse{Response: &extprocv3.CommonResponse{BodyMutation: mut}}}}
}
