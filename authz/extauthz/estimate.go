package extauthz

import (
	"strconv"
	"strings"

	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"

	"github.com/leakytokens/leaky/internal/estimate"
)

// estimateRequest estimates a Check request to path from its body and
// headers. A body shorter than its content-length was truncated by Envoy
// (max_request_bytes with allow_partial_message): the bytes it kept are
// scanned and their prompt scaled up to content-length (never below
// content-length ÷ 4), and the completion is never below defaultMax, since
// a limit may lie in the part not seen. The comparison with content-length,
// not Envoy's x-envoy-auth-partial-body alone, decides, so a client that
// sends the flag with a complete body changes nothing. A truncated body
// without a content-length (HTTP/2, chunked) cannot be costed: it is
// refused with 411 Length Required. A body with a content-encoding other
// than identity (gzip…) is refused with 415: its bytes are not what the
// provider reads, and a small compressed body would be costed as small.
func estimateRequest(path string, body []byte, h map[string]string, defaultMax int64) (tokens int64, provider string, ok bool, err error) {
	if len(body) == 0 {
		return 0, "", false, nil
	}
	if !estimate.IdentityEncoding(h["content-encoding"]) {
		return 0, "", false, &denial{typev3.StatusCode_UnsupportedMediaType, "unsupported_content_encoding",
			"send the body without a content-encoding: the gateway costs it by its text"}
	}
	cl, clErr := strconv.ParseInt(strings.TrimSpace(h["content-length"]), 10, 64)
	switch {
	case clErr == nil && cl > int64(len(body)):
		tokens, provider = estimate.Truncated(path, body, cl, defaultMax)
		return tokens, provider, true, nil
	case clErr != nil && strings.EqualFold(strings.TrimSpace(h["x-envoy-auth-partial-body"]), "true"):
		return 0, "", false, &denial{typev3.StatusCode_LengthRequired, "length_required",
			"the body is larger than the gateway inspects: send it with a content-length"}
	}
	tokens, provider, ok = estimate.Body(path, body, defaultMax)
	return tokens, provider, ok, nil
}
