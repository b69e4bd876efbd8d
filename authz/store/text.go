package store

import (
	"errors"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Store errors about the input or the backend rather than the records.
var (
	// ErrInvalid: a value the backend cannot store or compare, such as text
	// that is not UTF-8 or holds a NUL byte, or one a schema constraint
	// refuses. The HTTP API answers it 400.
	ErrInvalid = errors.New("invalid value")
	// ErrUnavailable: the backend did not answer (unreachable, stopped,
	// out of connections, or past the caller's deadline). The HTTP API
	// answers it 503.
	ErrUnavailable = errors.New("store unavailable")
)

// ValidText reports whether s can be stored as text by every Store: valid
// UTF-8 without a NUL byte (PostgreSQL's text refuses both). Every string
// a client sends is checked with it before it reaches a store.
func ValidText(s string) bool {
	return utf8.ValidString(s) && !strings.ContainsRune(s, 0)
}

// ValidName reports whether s is ValidText without control characters
// (C0, DEL, C1: line breaks, tabs, escapes), as names that are shown back
// to people (API key and organisation names) must be.
func ValidName(s string) bool {
	return utf8.ValidString(s) && !strings.ContainsFunc(s, unicode.IsControl)
}
