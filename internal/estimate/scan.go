package estimate

import (
	"errors"
	"unicode/utf8"
)

// maxJSONDepth bounds the nesting the scanner follows by recursion; a
// value deeper than that is read by tokens (bodyScan.byToken) and its bytes
// are charged one token each.
const maxJSONDepth = 64

var errBadJSON = errors.New("not JSON")

// role is what a JSON value means to the estimator, from the member names
// on its way from the top (for the API of the path).
type role uint8

const (
	roleOther       role = iota
	roleRoot             // the top-level value
	roleGenConfig        // Gemini's top-level generationConfig (either spelling)
	roleLimit            // a completion limit: max_tokens, maxOutputTokens…
	roleChoices          // a multiplier of the completion: n, best_of, candidateCount
	roleTokens           // the seed's top-level "tokens"
	roleProvider         // the top-level "provider"
	rolePrompt           // the legacy completions' top-level "prompt": a batch when an array
	rolePromptEntry      // an entry of a prompt array
)

// bodyScan is a JSON scanner that records what estimate needs, reading
// member names and strings with their escapes decoded, as the provider's
// parser will. A limit or multiplier met more than once counts at its
// largest, so no duplicate key lowers it whichever one the provider's parser
// keeps. It builds nothing in memory but the body's "provider".
type bodyScan struct {
	b    []byte
	i    int
	nest int
	api  api

	strBytes  int64 // decoded UTF-8 bytes of every member name and string
	numTokens int64 // number values, ceil(characters/3) each
	deepBytes int64 // bytes of values nested deeper than maxJSONDepth
	limit     int64 // the largest completion limit met; -1: none
	limitSum  int64 // every completion limit met, added up (apiOther: a batch)
	// limitDefault: somewhere the provider falls back to its default limit
	// (a null or unreadable limit, a generationConfig without one).
	limitDefault bool
	choices      int64 // the largest multiplier met; at least 1
	prompts      int64 // the largest number of prompts in a batch; at least 1
	entries      int64 // entries of the prompt array being read
	tokens       int64 // the largest seed "tokens"; -1: none
	tokensBad    bool  // a seed "tokens" that is not a count
	lenient      bool  // read what is not JSON as a lenient parser would (byToken)
	provider     string
	name         [64]byte // decoded member names and short strings
}

func newBodyScan(b []byte, a api) *bodyScan {
	return &bodyScan{b: b, api: a, limit: -1, choices: 1, prompts: 1, tokens: -1}
}

// scan reads the whole body as one JSON value: errBadJSON when it is not
// JSON (or has anything but white space after the value). The counts hold
// what was read up to an error.
func (s *bodyScan) scan() error {
	if err := s.value(roleRoot); err != nil {
		return err
	}
	if s.skipSpace() < len(s.b) {
		return errBadJSON
	}
	return nil
}

func (s *bodyScan) skipSpace() int {
	for s.i < len(s.b) && (s.b[s.i] == ' ' || s.b[s.i] == '\t' || s.b[s.i] == '\n' || s.b[s.i] == '\r') {
		s.i++
	}
	return s.i
}

func (s *bodyScan) value(r role) error {
	if s.skipSpace() >= len(s.b) {
		return errBadJSON
	}
	c := s.b[s.i]
	if c != '{' && r == roleGenConfig {
		s.limitDefault = true // not an object: no limit in it
	}
	if r == rolePromptEntry && (c == '"' || c == '[' || c == '{') {
		s.entries++ // a prompt; a number is a token of the one prompt
		s.prompts = max(s.prompts, s.entries)
	}
	switch {
	case (c == '{' || c == '[') && s.nest >= maxJSONDepth:
		return s.byToken(r)
	case c == '{':
		s.unreadable(r) // an object where a count belongs
		return s.object(r)
	case c == '[':
		s.unreadable(r)
		return s.array(r)
	case c == '"':
		size, dec, err := s.str()
		s.strBytes += size // also of a string cut short, for estimateTruncated
		if err != nil {
			return err
		}
		s.stringValue(r, dec)
		return nil
	case c == '-' || (c >= '0' && c <= '9'):
		return s.number(r)
	}
	if s.literal(r) {
		return nil
	}
	return errBadJSON
}

// stringValue records a string met in role r; dec is its decoded text, nil
// when longer than the name buffer.
func (s *bodyScan) stringValue(r role, dec []byte) {
	switch r {
	case roleProvider:
		if dec != nil {
			s.provider = string(dec)
		}
	case roleLimit, roleChoices, roleTokens:
		// Protobuf's JSON (Gemini) and lenient parsers read "100" as 100.
		if dec == nil {
			s.unreadable(r)
			return
		}
		s.count(r, dec)
	}
}

// unreadable records a value in role r that is not a count (null, a
// boolean, an array, a negative or non-numeric string).
func (s *bodyScan) unreadable(r role) {
	switch r {
	case roleLimit:
		s.limitDefault = true
	case roleTokens:
		s.tokensBad = true
	}
}

func (s *bodyScan) object(r role) error {
	s.nest++
	defer func() { s.nest-- }()
	s.i++ // {
	sawLimit := false
	defer func() {
		if r == roleGenConfig && !sawLimit {
			s.limitDefault = true
		}
	}()
	if s.skipSpace() < len(s.b) && s.b[s.i] == '}' {
		s.i++
		return nil
	}
	for {
		if s.skipSpace() >= len(s.b) || s.b[s.i] != '"' {
			return errBadJSON
		}
		size, name, err := s.str()
		if err != nil {
			return err
		}
		s.strBytes += size
		child := s.api.member(r, name)
		sawLimit = sawLimit || child == roleLimit
		if s.skipSpace() >= len(s.b) || s.b[s.i] != ':' {
			return errBadJSON
		}
		s.i++
		if err := s.value(child); err != nil {
			return err
		}
		if done, err := s.separator('}'); err != nil || done {
			return err
		}
	}
}

// separator consumes what follows a member or an element: a ',' (done
// false) or the closing byte (done true); anything else is not JSON.
func (s *bodyScan) separator(closing byte) (done bool, err error) {
	if s.skipSpace() >= len(s.b) {
		return false, errBadJSON
	}
	switch s.b[s.i] {
	case ',':
		s.i++
		return false, nil
	case closing:
		s.i++
		return true, nil
	}
	return false, errBadJSON
}

func (s *bodyScan) array(r role) error {
	s.nest++
	defer func() { s.nest-- }()
	elem := roleOther
	if r == rolePrompt {
		elem, s.entries = rolePromptEntry, 0
	}
	s.i++ // [
	if s.skipSpace() < len(s.b) && s.b[s.i] == ']' {
		s.i++
		return nil
	}
	for {
		if err := s.value(elem); err != nil {
			return err
		}
		if done, err := s.separator(']'); err != nil || done {
			return err
		}
	}
}

// str reads a string at s.i. size (also of the part read before an error) bounds the bytes of its decoded UTF-8
// from above (an escaped UTF-16 surrogate counts three bytes, so a pair six
// for its four; an invalid byte three, as U+FFFD), and dec is its decoded
// text while it fits s.name, else nil.
func (s *bodyScan) str() (size int64, dec []byte, err error) {
	s.i++ // "
	dec = s.name[:0]
	for s.i < len(s.b) {
		c := s.b[s.i]
		switch {
		case c == '"':
			s.i++
			return size, dec, nil
		case c < 0x20 && s.lenient: // Python's strict=False
			s.i++
			size++
		case c < 0x20:
			return size, nil, errBadJSON
		case c == '\\':
			r, n := unescape(s.b[s.i:])
			if n == 0 && s.lenient { // an escape no parser reads: its two bytes
				n, dec = min(2, len(s.b)-s.i), nil
				s.i += n
				size += int64(n)
				continue
			}
			if n == 0 {
				return size, nil, errBadJSON
			}
			s.i += n
			size += int64(max(utf8.RuneLen(r), 3*boolInt(r >= 0x800 || r < 0)))
			dec = appendName(dec, r)
		case c < utf8.RuneSelf:
			j := s.i + 1
			for j < len(s.b) && s.b[j] >= 0x20 && s.b[j] < utf8.RuneSelf && s.b[j] != '"' && s.b[j] != '\\' {
				j++
			}
			size += int64(j - s.i)
			if dec != nil && len(dec)+(j-s.i)+utf8.UTFMax <= cap(dec) {
				dec = append(dec, s.b[s.i:j]...)
			} else {
				dec = nil
			}
			s.i = j
		default:
			r, n := utf8.DecodeRune(s.b[s.i:])
			s.i += n
			size += int64(max(n, 3*boolInt(r == utf8.RuneError)))
			dec = appendName(dec, r)
		}
	}
	return size, nil, errBadJSON
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// appendName appends r to dec while it fits its capacity; past it, dec
// becomes nil and stays so.
func appendName(dec []byte, r rune) []byte {
	if dec == nil || len(dec)+utf8.UTFMax > cap(dec) {
		return nil
	}
	return utf8.AppendRune(dec, r)
}

// unescape decodes the escape at the start of b ("\n", "\u00e9"…): the
// rune (-1 for a UTF-16 surrogate, which is not one on its own) and the
// bytes it took, 0 when it is not a JSON escape.
func unescape(b []byte) (rune, int) {
	if len(b) < 2 {
		return 0, 0
	}
	switch b[1] {
	case '"', '\\', '/':
		return rune(b[1]), 2
	case 'b':
		return '\b', 2
	case 'f':
		return '\f', 2
	case 'n':
		return '\n', 2
	case 'r':
		return '\r', 2
	case 't':
		return '\t', 2
	case 'u':
		if len(b) < 6 {
			return 0, 0
		}
		var v rune
		for _, c := range b[2:6] {
			switch {
			case c >= '0' && c <= '9':
				v = v<<4 | rune(c-'0')
			case c >= 'a' && c <= 'f':
				v = v<<4 | rune(c-'a'+10)
			case c >= 'A' && c <= 'F':
				v = v<<4 | rune(c-'A'+10)
			default:
				return 0, 0
			}
		}
		if v >= 0xd800 && v < 0xe000 {
			return -1, 6
		}
		return v, 6
	}
	return 0, 0
}
