package store_test

import (
	"testing"

	"github.com/leakytokens/leaky/authz/store"
)

func TestValidTextAndName(t *testing.T) {
	for _, c := range []struct {
		name        string
		in          string
		text, named bool
	}{
		{"ascii", "alice", true, true},
		{"accents and euro", "Zoë €€€", true, true},
		{"empty", "", true, true},
		{"nul", "a\x00b", false, false},
		{"invalid utf-8", "a\xffb", false, false},
		{"lone surrogate bytes", "\xed\xa0\x80", false, false},
		{"newline", "a\nb", true, false},
		{"tab", "a\tb", true, false},
		{"escape", "a\x1b[31mb", true, false},
		{"del", "a\x7fb", true, false},
		{"c1 control", "a\u0085b", true, false},
	} {
		if got := store.ValidText(c.in); got != c.text {
			t.Errorf("%s: ValidText(%q) = %v, want %v", c.name, c.in, got, c.text)
		}
		if got := store.ValidName(c.in); got != c.named {
			t.Errorf("%s: ValidName(%q) = %v, want %v", c.name, c.in, got, c.named)
		}
	}
}
