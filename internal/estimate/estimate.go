// Package estimate costs an LLM request before it is sent: the tokens its
// body's text will take (chars/4, numbers by their digits, the seed API's
// own "tokens") plus the completion it may ask for (max_tokens and its
// relatives, times choices), never below what the provider will read. authz
// uses it on every Check; the token service (REST consume, metering) on the
// bodies it sees. It never builds the body in memory.
package estimate

import (
	"bytes"
	"math"
	"strings"
)

// maxEstimate caps an estimate; the ratelimit service treats hits_addend
// as a uint64 but no request needs more.
const maxEstimate = 1_000_000_000

// api is the request shape a path names, which decides where the
// completion limit is read.
type api uint8

const (
	apiOther       api = iota // unknown: every limit-named member anywhere, and never below the default
	apiChat                   // …/chat/completions: max_tokens, max_completion_tokens, n
	apiCompletions            // …/completions: max_tokens, n, best_of
	apiResponses              // …/responses: max_output_tokens
	apiEmbeddings             // …/embeddings, Gemini :embedContent, :batchEmbedContents, :countTokens: no completion
	apiGemini                 // Gemini :generateContent, :streamGenerateContent: generationConfig
	apiSeed                   // the seed's token API, /api/v1/tokens/…: the body's "tokens"
)

// apiOf classifies a cleaned path by its last segment: the same API is
// served under /openai/v1/…, /qwen/…/v1/… or /api/v1/<provider>/….
func apiOf(path string) api {
	if strings.HasPrefix(path, "/api/v1/tokens/") {
		return apiSeed
	}
	last := path[strings.LastIndexByte(path, '/')+1:]
	if i := strings.LastIndexByte(last, ':'); i >= 0 {
		switch last[i+1:] {
		case "generateContent", "streamGenerateContent":
			return apiGemini
		case "embedContent", "batchEmbedContents", "countTokens":
			return apiEmbeddings
		}
		return apiOther
	}
	switch {
	case strings.HasSuffix(path, "/chat/completions"):
		return apiChat
	case strings.HasSuffix(path, "/completions"):
		return apiCompletions
	case strings.HasSuffix(path, "/responses"):
		return apiResponses
	case strings.HasSuffix(path, "/embeddings"):
		return apiEmbeddings
	}
	return apiOther
}

// member returns the role of the member called name (decoded; nil when
// too long to be one the estimator reads) of an object in role parent.
func (a api) member(parent role, name []byte) role {
	if name == nil {
		return roleOther
	}
	switch parent {
	case roleRoot:
		switch n := string(name); {
		case n == "provider":
			return roleProvider
		case a == apiChat && (n == "max_tokens" || n == "max_completion_tokens"),
			a == apiCompletions && n == "max_tokens",
			a == apiResponses && n == "max_output_tokens":
			return roleLimit
		case a == apiChat && n == "n", a == apiCompletions && (n == "n" || n == "best_of"):
			return roleChoices
		case a == apiGemini && (n == "generationConfig" || n == "generation_config"):
			return roleGenConfig
		case a == apiSeed && n == "tokens":
			return roleTokens
		case a == apiCompletions && n == "prompt":
			return rolePrompt
		}
	case roleGenConfig: // Gemini reads a proto field by its JSON or its proto name
		switch string(name) {
		case "maxOutputTokens", "max_output_tokens":
			return roleLimit
		case "candidateCount", "candidate_count":
			return roleChoices
		}
	}
	if a == apiOther || a == apiSeed {
		return anywhere(a, name)
	}
	return roleOther
}

// anywhere returns the role of a member called name wherever it is, on an
// API whose shape is unknown: every limit-named member is a limit and
// (but on the seed's API) every multiplier-named member a multiplier.
func anywhere(a api, name []byte) role {
	switch string(name) {
	case "max_tokens", "max_completion_tokens", "max_output_tokens", "maxOutputTokens", "max_new_tokens", "maxTokens":
		return roleLimit
	case "n", "best_of", "candidateCount", "candidate_count", "num_return_sequences":
		if a != apiSeed {
			return roleChoices
		}
	}
	return roleOther
}

// Body returns the tokens a request to path will cost, from its body
// read as the provider's JSON parser reads it (escapes decoded, a UTF-8
// byte order mark skipped):
//
//   - the prompt: every member name and string anywhere in the body, in
//     UTF-8 bytes ÷ 4 rounded up, plus a number's characters ÷ 3 rounded
//     up (token-id arrays, long integers), plus one token a byte of a
//     value nested deeper than maxJSONDepth, so text in tools, tool calls,
//     instructions or any field a provider may read is costed;
//   - plus the completion limit read where the path's API reads it (apiOf)
//     times its number of choices (n, best_of, candidateCount) and, on the
//     legacy completions, its batch of prompts. A limit met twice counts
//     at its larger value; a null or unreadable one, or none, means
//     defaultMax. An unknown API (a batch, perhaps) adds up every
//     limit-named member anywhere, never less than defaultMax, times the
//     largest multiplier anywhere; embeddings have no completion.
//
// On the seed's token API a body's own "tokens" count is the estimate.
// A body that is not JSON is read again leniently (bodyScan.rescan). ok
// is false for an empty body. provider is the body's top-level "provider".
//
// It scans the body once without building it in memory: Check runs it on
// every request.
func Body(path string, body []byte, defaultMax int64) (tokens int64, provider string, ok bool) {
	body = trimBody(body)
	if len(body) == 0 {
		return 0, "", false
	}
	defaultMax = min(max(defaultMax, 0), maxEstimate)
	s := newBodyScan(body, apiOf(path))
	if err := s.scan(); err != nil {
		return s.rescan(defaultMax), "", true
	}
	n := s.prompt() + s.charged(defaultMax, true)
	if s.api == apiSeed && s.tokens >= 0 {
		if s.tokensBad {
			n = max(n, s.tokens)
		} else {
			n = s.tokens
		}
	}
	return clampEstimate(n), s.provider, true
}

func (s *bodyScan) prompt() int64 { return ceilDiv(s.strBytes, 4) + s.numTokens + s.deepBytes }

// charged is the completion times its choices and its batch of prompts.
func (s *bodyScan) charged(defaultMax int64, whole bool) int64 {
	return mulClamp(mulClamp(s.completion(defaultMax, whole), s.choices), s.prompts)
}

// completion returns the completion limit to charge; whole is false when
// the scan saw only part of the body, whose limit may lie in the rest.
func (s *bodyScan) completion(defaultMax int64, whole bool) int64 {
	switch {
	case s.api == apiEmbeddings:
		return 0
	case s.api == apiOther || s.api == apiSeed: // shape unknown: every limit in it, added up
		return max(s.limitSum, defaultMax)
	case !whole || s.limit < 0 || s.limitDefault:
		return max(s.limit, defaultMax)
	}
	return s.limit
}

// trimBody drops a UTF-8 byte order mark, which Python's json.loads(bytes)
// and Jackson skip, and the white space around the value.
func trimBody(b []byte) []byte {
	return trimJSONSpace(bytes.TrimPrefix(b, []byte("\xef\xbb\xbf")))
}

func trimJSONSpace(b []byte) []byte {
	isSpace := func(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }
	for len(b) > 0 && isSpace(b[0]) {
		b = b[1:]
	}
	for len(b) > 0 && isSpace(b[len(b)-1]) {
		b = b[:len(b)-1]
	}
	return b
}

func ceilDiv(a, b int64) int64 { return (a + b - 1) / b }

func clampEstimate(n int64) int64 { return max(1, min(n, maxEstimate)) }

// IdentityEncoding reports whether a content-encoding header value leaves
// the body as it is: absent, or only "identity" codings.
func IdentityEncoding(v string) bool {
	for c := range strings.SplitSeq(v, ",") {
		if c = strings.TrimSpace(c); c != "" && !strings.EqualFold(c, "identity") {
			return false
		}
	}
	return true
}

// Truncated costs the first bytes of a body of length bytes (a body the
// gateway cut): the bytes kept are scanned and their prompt scaled up to
// length (never below length ÷ 4), and the completion is never below
// defaultMax, since a limit may lie in the part not seen.
func Truncated(path string, body []byte, length, defaultMax int64) (int64, string) {
	defaultMax = min(max(defaultMax, 0), maxEstimate)
	length = min(length, 1<<50)
	s := newBodyScan(bytes.TrimPrefix(body, []byte("\xef\xbb\xbf")), apiOf(path))
	_ = s.scan() // it ends in an error where the bytes stop; the counts stand
	scaled := math.Ceil(float64(s.prompt()) * float64(length) / float64(len(body)))
	prompt := max(ceilDiv(length, 4), int64(min(scaled, maxEstimate)))
	n := min(prompt, maxEstimate) + s.charged(defaultMax, false)
	return clampEstimate(max(n, s.tokens)), s.provider
}
