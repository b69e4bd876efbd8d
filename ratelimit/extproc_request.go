package ratelimit

import (
	"bytes"
	"encoding/json"
	"strconv"
	"strings"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"

	"github.com/leakytokens/leaky/internal/contract"
	"github.com/leakytokens/leaky/internal/estimate"
)

// reestimateDefaultMax is the completion a request without a limit is
// costed at when the metering must estimate it itself (no x-leaky-estimate).
const reestimateDefaultMax = 4096

// requestHeaders reads the request's id, path, provider and estimate and
// lets the request go on; when the policy lets the metering rewrite the body
// it removes content-length, which the gateway then sets for the body sent.
func (x *exchange) requestHeaders(h *extprocv3.HttpHeaders) *extprocv3.ProcessingResponse {
	hs := headerMap(h.GetHeaders())
	x.id = hs[contract.HeaderRequestID]
	x.path = hs[":path"]
	x.provider = hs[contract.HeaderProvider]
	if n, err := strconv.ParseInt(hs[contract.HeaderEstimate], 10, 64); err == nil && n > 0 {
		x.estimate = n
	}
	if x.id == "" || h.GetEndOfStream() || !x.mayRewrite() {
		return continueHeaders(true, nil)
	}
	return continueHeaders(true, &extprocv3.HeaderMutation{RemoveHeaders: []string{"content-length"}})
}

// mayRewrite reports whether the metering may change the request's body.
func (x *exchange) mayRewrite() bool {
	return x.metering.ClampMaxTokens || (x.metering.ForceStreamUsage && openAIStyle(x.path))
}

// pathOnly is the path without its query.
func pathOnly(p string) string {
	if i := strings.IndexByte(p, '?'); i >= 0 {
		return p[:i]
	}
	return p
}

// openAIStyle reports whether the path is an OpenAI-shaped (OpenAI, Qwen
// compatible mode) chat or text completion, which streams with
// stream_options.include_usage.
func openAIStyle(path string) bool {
	p := pathOnly(path)
	return strings.HasSuffix(p, "/chat/completions") || strings.HasSuffix(p, "/completions")
}

func geminiPath(path string) bool {
	p := pathOnly(path)
	return strings.HasSuffix(p, ":generateContent") || strings.HasSuffix(p, ":streamGenerateContent")
}

// requestBody reads the whole request body (BUFFERED): its prompt part
// (for an abort), and, when the policy says so, forces the stream's usage
// and clamps the completion limit.
func (x *exchange) requestBody(b *extprocv3.HttpBody) *extprocv3.ProcessingResponse {
	cont := func(mut *extprocv3.BodyMutation) *extprocv3.ProcessingResponse {
		return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestBody{
			RequestBody: &extprocv3.BodyResponse{Response: &extprocv3.CommonResponse{BodyMutation: mut}}}}
	}
	body := b.GetBody()
	if x.id == "" || !b.GetEndOfStream() || len(body) > maxBufferedBody {
		return cont(nil) // a part of a body is not rewritten; the estimate stands
	}
	if x.estimate == 0 {
		if n, _, ok := estimate.Body(x.path, body, reestimateDefaultMax); ok {
			x.estimate = n
		}
	}
	var doc map[string]any
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	if dec.Decode(&doc) != nil || doc == nil || dec.More() {
		x.prompt = x.promptOf(body)
		return cont(nil)
	}
	x.prompt = x.promptOf(marshalDoc(withoutLimits(doc)))
	changed := false
	if x.metering.ForceStreamUsage && openAIStyle(x.path) && forceStreamUsage(doc) {
		x.strip = true
		changed = true
		x.m.s.metrics.meter.forced.Inc()
	}
	if x.metering.ClampMaxTokens && x.estimate > 0 && x.clamp(doc) {
		changed = true
		x.m.s.metrics.meter.clamped.Inc()
	}
	if !changed {
		return cont(nil)
	}
	return cont(&extprocv3.BodyMutation{Mutation: &extprocv3.BodyMutation_Body{Body: marshalDoc(doc)}})
}

// promptOf is the prompt part of the estimate: the body costed with no
// completion, never above the estimate.
func (x *exchange) promptOf(body []byte) int64 {
	n, _, ok := estimate.Body(x.path, body, 0)
	if !ok {
		return 0
	}
	return min(n, x.estimate)
}

// marshalDoc writes a decoded body back (members sorted, numbers as they
// were written, no HTML escaping).
func marshalDoc(doc map[string]any) []byte {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(doc) // a decoded document always encodes
	return bytes.TrimSuffix(b.Bytes(), []byte("\n"))
}

// completionLimits are the members that bound a completion, top level and
// in Gemini's generation config.
var (
	completionLimits = []string{"max_tokens", "max_completion_tokens", "max_output_tokens"}
	geminiLimits     = []string{"maxOutputTokens", "max_output_tokens"}
	geminiConfigs    = []string{"generationConfig", "generation_config"}
)

// withoutLimits is a shallow copy of doc without its completion limits.
func withoutLimits(doc map[string]any) map[string]any {
	out := make(map[string]any, len(doc))
	for k, v := range doc {
		out[k] = v
	}
	for _, k := range completionLimits {
		delete(out, k)
	}
	for _, c := range geminiConfigs {
		if g, ok := out[c].(map[string]any); ok {
			g2 := make(map[string]any, len(g))
			for k, v := range g {
				g2[k] = v
			}
			for _, k := range geminiLimits {
				delete(g2, k)
			}
			out[c] = g2
		}
	}
	return out
}

// forceStreamUsage sets stream_options.include_usage on a streaming request
// that lacks it, and reports whether it did.
func forceStreamUsage(doc map[string]any) bool {
	if s, _ := doc["stream"].(bool); !s {
		return false
	}
	opts, _ := doc["stream_options"].(map[string]any)
	if on, _ := opts["include_usage"].(bool); on {
		return false
	}
	if opts == nil {
		opts = map[string]any{}
	}
	opts["include_usage"] = true
	doc["stream_options"] = opts
	return true
}

// clamp lowers the request's completion limits to what its estimate left
// for the completion (per choice), and sets one when it has none; it
// reports whether it changed anything. It never raises a limit.
func (x *exchange) clamp(doc map[string]any) bool {
	allowed := max(x.estimate-max(x.prompt, 0), 1)
	if n, ok := intMember(doc, "n"); ok && n > 1 {
		allowed = max(allowed/n, 1)
	}
	target, keys, fallback := doc, completionLimits, "max_tokens"
	switch {
	case geminiPath(x.path):
		cfg := "generationConfig"
		if _, ok := doc["generation_config"].(map[string]any); ok {
			cfg = "generation_config"
		}
		g, _ := doc[cfg].(map[string]any)
		if g == nil {
			g = map[string]any{}
			doc[cfg] = g
		}
		target, keys, fallback = g, geminiLimits, "maxOutputTokens"
	case strings.HasSuffix(pathOnly(x.path), "/responses"):
		fallback = "max_output_tokens"
	}
	changed, found := false, false
	for _, k := range keys {
		if _, present := target[k]; !present {
			continue
		}
		found = true
		if v, ok := intMember(target, k); !ok || v > allowed {
			target[k] = json.Number(strconv.FormatInt(allowed, 10))
			changed = true
		}
	}
	if !found {
		target[fallback] = json.Number(strconv.FormatInt(allowed, 10))
		changed = true
	}
	return changed
}

// intMember reads an integer member of doc.
func intMember(doc map[string]any, k string) (int64, bool) {
	n, ok := doc[k].(json.Number)
	if !ok {
		return 0, false
	}
	v, err := n.Int64()
	return v, err == nil
}
