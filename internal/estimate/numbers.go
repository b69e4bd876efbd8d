package estimate

import (
	"errors"
	"math"
	"strconv"
)

// number reads the number at s.i, met in role r: errBadJSON when it is
// not written as JSON writes numbers, unless lenient. Long numbers (an enum
// of 4000-digit integers) tokenise by about three digits a token.
func (s *bodyScan) number(r role) error {
	start := s.i
	for s.i < len(s.b) && isNumberByte(s.b[s.i]) {
		s.i++
	}
	s.numTokens += ceilDiv(int64(s.i-start), 3)
	if !s.lenient && !jsonNumber(s.b[start:s.i]) {
		return errBadJSON
	}
	s.count(r, s.b[start:s.i])
	return nil
}

// jsonNumber reports whether b is a number as JSON writes it:
// -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
func jsonNumber(b []byte) bool {
	digits := func() int {
		n := 0
		for n < len(b) && b[n] >= '0' && b[n] <= '9' {
			n++
		}
		b = b[n:]
		return n
	}
	if len(b) > 0 && b[0] == '-' {
		b = b[1:]
	}
	if len(b) > 0 && b[0] == '0' {
		b = b[1:]
	} else if digits() == 0 {
		return false
	}
	if len(b) > 0 && b[0] == '.' {
		if b = b[1:]; digits() == 0 {
			return false
		}
	}
	if len(b) > 0 && (b[0] == 'e' || b[0] == 'E') {
		if b = b[1:]; len(b) > 0 && (b[0] == '+' || b[0] == '-') {
			b = b[1:]
		}
		if digits() == 0 {
			return false
		}
	}
	return len(b) == 0
}

func isNumberByte(c byte) bool {
	return (c >= '0' && c <= '9') || c == '-' || c == '+' || c == '.' || c == 'e' || c == 'E'
}

// count records a number, written as text, met in role r.
func (s *bodyScan) count(r role, text []byte) {
	if r != roleLimit && r != roleChoices && r != roleTokens {
		return
	}
	n, ok := parseCount(text)
	if !ok {
		s.unreadable(r)
		return
	}
	switch r {
	case roleLimit:
		s.limit = max(s.limit, n)
		s.limitSum = min(s.limitSum+n, maxEstimate)
	case roleChoices:
		s.choices = max(s.choices, n)
	case roleTokens:
		s.tokens = max(s.tokens, n)
	}
}

// parseCount reads a non-negative count the way a lenient provider parser
// would: an integer, or a fraction or exponent rounded up; past maxEstimate
// it is maxEstimate. ok is false for anything else, negatives included.
func parseCount(text []byte) (int64, bool) {
	for len(text) > 0 && (text[0] == ' ' || text[0] == '\t') {
		text = text[1:]
	}
	for len(text) > 0 && (text[len(text)-1] == ' ' || text[len(text)-1] == '\t') {
		text = text[:len(text)-1]
	}
	if n, err := strconv.ParseInt(string(text), 10, 64); err == nil {
		return min(n, maxEstimate), n >= 0
	}
	f, err := strconv.ParseFloat(string(text), 64)
	var ne *strconv.NumError
	if (err != nil && !(errors.As(err, &ne) && ne.Err == strconv.ErrRange)) || math.IsNaN(f) || f < 0 {
		return 0, false
	}
	return int64(min(math.Ceil(f), maxEstimate)), true
}
