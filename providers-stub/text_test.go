package providersstub

import (
	"strings"
	"testing"
)

func TestCountingRule(t *testing.T) {
	for _, tc := range []struct {
		texts []string
		want  int64
	}{
		{nil, 1},                    // at least 1
		{[]string{""}, 1},           // at least 1
		{[]string{"a"}, 1},          // ⌈1/4⌉
		{[]string{"abcd"}, 1},       // ⌈4/4⌉
		{[]string{"abcde"}, 2},      // ⌈5/4⌉
		{[]string{"abcde", "f"}, 3}, // each text rounded up, then summed
		{[]string{"héé"}, 2},        // bytes, not characters: 5 bytes
		{[]string{strings.Repeat("x", 4000)}, 1000},
	} {
		if got := promptTokens(tc.texts); got != tc.want {
			t.Errorf("promptTokens(%q) = %d, want %d", tc.texts, got, tc.want)
		}
	}
}

func TestGenerate(t *testing.T) {
	for _, tc := range []struct {
		name    string
		limit   int64
		def     int
		n       int
		limited bool
	}{
		{"no limit", 0, 32, 32, false},
		{"lower limit", 5, 32, 5, true},
		{"equal limit", 32, 32, 32, false},
		{"higher limit", 100, 32, 32, false},
		{"one", 1, 32, 1, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := generate("prompt", tc.limit, tc.def)
			text := g.text()
			wordsOf(t, text, tc.n)
			if tokens(text) != int64(tc.n) || g.limited != tc.limited {
				t.Errorf("generate(%d, %d): %d tokens, limited %v; want %d, %v", tc.limit, tc.def, tokens(text), g.limited, tc.n, tc.limited)
			}
			if joined := strings.Join(g.pieces(), ""); joined != text {
				t.Errorf("pieces join to %q, want %q", joined, text)
			}
			if again := generate("prompt", tc.limit, tc.def).text(); again != text {
				t.Errorf("generate is not deterministic: %q then %q", text, again)
			}
		})
	}
	// The words follow the prompt.
	if a, b := generate("one prompt", 0, 32).text(), generate("another", 0, 32).text(); a == b {
		t.Errorf("two prompts, one text %q", a)
	}
}
