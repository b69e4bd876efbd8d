package estimate

// byToken reads the value at s.i token by token, without recursion: a
// string followed by ':' is a member name, which gives the role of the
// value after it (nameRole), and a prompt array is counted where it is
// met. Strict, it reads one value nested deeper than maxJSONDepth, whose
// bytes it charges one token each (deepBytes), and fails where it is not
// JSON. Lenient (s.lenient), it reads the whole of a body the scanner
// refused, skipping what is not JSON, so that a body a provider's parser
// may still accept (a NaN, a control character in a string) keeps its
// limits and multipliers.
func (s *bodyScan) byToken(r role) error {
	start, depth, next, promptDepth := s.i, 0, r, -1
	defer func() {
		if !s.lenient {
			s.deepBytes += int64(s.i - start)
		}
	}()
	for s.skipSpace() < len(s.b) {
		c := s.b[s.i]
		if depth == promptDepth && (c == '"' || c == '[' || c == '{') {
			s.entries++
			s.prompts = max(s.prompts, s.entries)
		}
		switch {
		case c == '{' || c == '[':
			s.unreadable(next)
			if next == rolePrompt && c == '[' {
				promptDepth, s.entries = depth+1, 0
			}
			depth, next = depth+1, roleOther
			s.i++
		case c == '}' || c == ']':
			s.i++
			if depth--; depth < promptDepth {
				promptDepth = -1
			}
			if depth <= 0 && !s.lenient {
				return nil
			}
			depth, next = max(depth, 0), roleOther
		case c == ',':
			s.i++
			next = roleOther
		case c == '"':
			var err error
			if next, err = s.tokenString(next); err != nil {
				return err
			}
		case c == '-' || (c >= '0' && c <= '9'):
			if err := s.number(next); err != nil {
				return err
			}
			next = roleOther
		default:
			if !s.literal(next) {
				if !s.lenient {
					return errBadJSON
				}
				s.i++ // not JSON: skipped
			}
			next = roleOther
		}
	}
	if s.lenient {
		return nil
	}
	return errBadJSON
}

// tokenString reads the string at s.i for byToken, met in role r, and
// returns the role of the value after it: its own when it is a member name,
// else roleOther.
func (s *bodyScan) tokenString(r role) (role, error) {
	size, dec, err := s.str()
	s.strBytes += size
	if err != nil {
		return roleOther, err
	}
	if s.skipSpace() < len(s.b) && s.b[s.i] == ':' {
		s.i++
		return s.nameRole(dec), nil
	}
	s.stringValue(r, dec)
	return roleOther, nil
}

// literal reads true, false or null at s.i, met in role r.
func (s *bodyScan) literal(r role) bool {
	for _, lit := range [...]string{"true", "false", "null"} {
		if len(s.b)-s.i >= len(lit) && string(s.b[s.i:s.i+len(lit)]) == lit {
			s.i += len(lit)
			s.unreadable(r)
			return true
		}
	}
	return false
}

// nameRole is the role of the value of a member called name met by
// byToken. Strict, it is that of a member of an ordinary object. Lenient,
// where the shape is not known, every limit and multiplier anywhere counts
// (anywhere), and so does a legacy completions' prompt batch.
func (s *bodyScan) nameRole(name []byte) role {
	if !s.lenient {
		return s.api.member(roleOther, name)
	}
	switch {
	case s.api == apiCompletions && string(name) == "prompt":
		return rolePrompt
	case s.api == apiSeed && string(name) == "tokens":
		return roleTokens
	case s.api == apiSeed:
		return anywhere(apiSeed, name)
	}
	return anywhere(apiOther, name)
}

// rescan reads the body again, leniently, after the scanner refused it,
// and returns its estimate: the larger of its prompt and its size ÷ 4,
// plus every limit met added up (never below defaultMax) times the
// largest multiplier and batch.
func (s *bodyScan) rescan(defaultMax int64) int64 {
	*s = bodyScan{b: s.b, api: s.api, limit: -1, choices: 1, prompts: 1, tokens: -1, lenient: true}
	_ = s.byToken(roleOther) // lenient: reads to the end
	completion := max(s.limitSum, defaultMax)
	if s.api == apiEmbeddings {
		completion = 0
	}
	n := max(ceilDiv(int64(len(s.b)), 4), s.prompt()) + mulClamp(mulClamp(completion, s.choices), s.prompts)
	return clampEstimate(max(n, s.tokens))
}

// mulClamp multiplies two non-negative counts, at most maxEstimate.
func mulClamp(a, b int64) int64 {
	if a != 0 && b > maxEstimate/a {
		return maxEstimate
	}
	return min(a*b, maxEstimate)
}
