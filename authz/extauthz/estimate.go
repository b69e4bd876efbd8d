package extauthz

import (
	"bytes"
	"errors"
	"strconv"
	"strings"
)

// maxEstimate caps an estimate; the ratelimit service treats hits_addend
// as a uint64 but no request needs more.
const maxEstimate = 1_000_000_000

// perMessageTokens is the overhead a chat message costs beyond its text.
const perMessageTokens = 4

// maxJSONDepth bounds the nesting the estimator follows.
const maxJSONDepth = 64

// estimate returns the tokens a request will cost, from the bodies of
// OpenAI and Qwen chat (messages[].content, max_completion_tokens or
// max_tokens), Gemini (contents[].parts[].text, systemInstruction,
// generationConfig.maxOutputTokens) and the seed ({"tokens": n}). The
// prompt counts four bytes per token, rounded up, plus a per-message
// overhead; the completion counts its limit, or defaultMax when the body
// names none. Only the limits at their real places count: max_tokens and
// max_completion_tokens at the top level, maxOutputTokens directly in the
// top-level generationConfig; the same names nested elsewhere are ignored,
// so they cannot lower the estimate. The seed's top-level "tokens" is taken
// as it is when the body has no messages or contents, else only when it is
// larger than the chat estimate. A body that is not JSON (for example one Envoy
// truncated at max_request_bytes) is costed by its length. ok is false for
// an empty body. provider is the body's top-level "provider", if any.
//
// It scans the body once without building it in memory: Check runs it on
// every request.
func estimate(body []byte, defaultMax int64) (tokens int64, provider string, ok bool) {
	body = bytes.TrimSpace(body)
	if len(body) == 0 {
		return 0, "", false
	}
	s := bodyScan{b: body}
	if err := s.value("", 0); err != nil || s.skipSpace() < len(s.b) {
		return clampEstimate(ceilDiv(int64(len(body)), 4) + defaultMax), "", true
	}
	if s.seedTokens > 0 && !s.chat {
		return clampEstimate(s.seedTokens), s.provider, true
	}
	completion := defaultMax
	switch {
	case s.maxCompletion >= 0:
		completion = s.maxCompletion
	case s.maxTokens >= 0:
		completion = s.maxTokens
	case s.maxOutput >= 0:
		completion = s.maxOutput
	}
	n := ceilDiv(s.chars, 4) + s.messages*perMessageTokens + completion
	return clampEstimate(max(n, s.seedTokens)), s.provider, true
}

// bodyScan is a minimal JSON scanner that records what estimate needs.
type bodyScan struct {
	b []byte
	i int

	chars, messages                     int64
	maxCompletion, maxTokens, maxOutput int64 // -1: absent
	seedTokens                          int64
	chat                                bool // a top-level messages or contents
	genConfig                           bool // inside the top-level generationConfig
	provider                            string
	nest                                int // open objects and arrays
}

var errBadJSON = errors.New("not JSON")

func (s *bodyScan) skipSpace() int {
	for s.i < len(s.b) && (s.b[s.i] == ' ' || s.b[s.i] == '\t' || s.b[s.i] == '\n' || s.b[s.i] == '\r') {
		s.i++
	}
	return s.i
}

// value scans one value that is the member key of an object at depth (0:
// the top level; inside arrays the key is inherited).
func (s *bodyScan) value(key string, depth int) error {
	if s.skipSpace() >= len(s.b) {
		return errBadJSON
	}
	if depth == 0 {
		s.maxCompletion, s.maxTokens, s.maxOutput = -1, -1, -1
	}
	switch c := s.b[s.i]; {
	case c == '{':
		if key == "messages" || key == "contents" || key == "systemInstruction" {
			s.messages++
		}
		if key == "generationConfig" && depth == 1 {
			s.genConfig = true
			defer func() { s.genConfig = false }()
		}
		return s.object(depth)
	case c == '[':
		if (key == "messages" || key == "contents") && depth == 1 {
			s.chat = true
		}
		return s.array(key, depth)
	case c == '"':
		str, escaped, err := s.str()
		if err != nil {
			return err
		}
		switch {
		case key == "content" || key == "text" || key == "prompt":
			s.chars += int64(len(str))
		case key == "provider" && depth == 1 && !escaped:
			s.provider = string(str)
		}
		return nil
	case c == '-' || (c >= '0' && c <= '9'):
		return s.number(key, depth)
	default:
		for _, lit := range []string{"true", "false", "null"} {
			if bytes.HasPrefix(s.b[s.i:], []byte(lit)) {
				s.i += len(lit)
				return nil
			}
		}
		return errBadJSON
	}
}

func (s *bodyScan) object(depth int) error {
	if s.nest++; s.nest > maxJSONDepth {
		return errBadJSON
	}
	defer func() { s.nest-- }()
	s.i++ // {
	if s.skipSpace() < len(s.b) && s.b[s.i] == '}' {
		s.i++
		return nil
	}
	for {
		if s.skipSpace() >= len(s.b) || s.b[s.i] != '"' {
			return errBadJSON
		}
		k, _, err := s.str()
		if err != nil {
			return err
		}
		if s.skipSpace() >= len(s.b) || s.b[s.i] != ':' {
			return errBadJSON
		}
		s.i++
		if err := s.value(string(k), depth+1); err != nil {
			return err
		}
		if s.skipSpace() >= len(s.b) {
			return errBadJSON
		}
		switch s.b[s.i] {
		case ',':
			s.i++
		case '}':
			s.i++
			return nil
		default:
			return errBadJSON
		}
	}
}

func (s *bodyScan) array(key string, depth int) error {
	if s.nest++; s.nest > maxJSONDepth {
		return errBadJSON
	}
	defer func() { s.nest-- }()
	s.i++ // [
	if s.skipSpace() < len(s.b) && s.b[s.i] == ']' {
		s.i++
		return nil
	}
	for {
		if err := s.value(key, depth); err != nil {
			return err
		}
		if s.skipSpace() >= len(s.b) {
			return errBadJSON
		}
		switch s.b[s.i] {
		case ',':
			s.i++
		case ']':
			s.i++
			return nil
		default:
			return errBadJSON
		}
	}
}

// str scans a string and returns its raw bytes (escapes left as written)
// and whether it had any.
func (s *bodyScan) str() ([]byte, bool, error) {
	s.i++ // "
	start, escaped := s.i, false
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case '\\':
			escaped = true
			s.i += 2
		case '"':
			out := s.b[start:s.i]
			s.i++
			return out, escaped, nil
		default:
			s.i++
		}
	}
	return nil, false, errBadJSON
}

func (s *bodyScan) number(key string, depth int) error {
	start := s.i
	for s.i < len(s.b) && bytes.IndexByte([]byte("+-.eE0123456789"), s.b[s.i]) >= 0 {
		s.i++
	}
	n, err := strconv.ParseInt(string(s.b[start:s.i]), 10, 64)
	if err != nil {
		if _, ferr := strconv.ParseFloat(string(s.b[start:s.i]), 64); ferr != nil {
			return errBadJSON
		}
		n = maxEstimate // a fraction or an out-of-range integer
	}
	if n < 0 {
		return nil
	}
	switch {
	case key == "max_completion_tokens" && depth == 1:
		s.maxCompletion = n
	case key == "max_tokens" && depth == 1:
		s.maxTokens = n
	case key == "maxOutputTokens" && depth == 2 && s.genConfig:
		s.maxOutput = n
	case key == "tokens" && depth == 1:
		s.seedTokens = n
	}
	return nil
}

func ceilDiv(a, b int64) int64 { return (a + b - 1) / b }

func clampEstimate(n int64) int64 { return max(1, min(n, maxEstimate)) }

// estimateRequest estimates a Check request from its body and headers.
// When the body is shorter than its content-length (Envoy truncated it at
// max_request_bytes with allow_partial_message, and says so in
// x-envoy-auth-partial-body), the bytes it saw are no measure of the
// request: the prompt is costed by content-length instead. The comparison
// with content-length, not the flag alone, decides, so a client that sends
// the flag with a complete body changes nothing.
func estimateRequest(body []byte, h map[string]string, defaultMax int64) (tokens int64, provider string, ok bool) {
	if cl, err := strconv.ParseInt(strings.TrimSpace(h["content-length"]), 10, 64); err == nil && cl > int64(len(body)) && len(body) > 0 {
		return clampEstimate(ceilDiv(cl, 4) + defaultMax), "", true
	}
	return estimate(body, defaultMax)
}
