package providersstub

import (
	"crypto/sha256"
	"testing"
)

// The memory of attempts keeps the last max requests: the one seen first
// is forgotten, so its next attempt counts as its first.
func TestAttemptsAreBounded(t *testing.T) {
	key := func(s string) [sha256.Size]byte { return sha256.Sum256([]byte(s)) }
	a := newAttempts(2)
	for _, step := range []struct {
		key  string
		want int
	}{
		{"a", 1}, {"a", 2}, {"b", 1}, {"c", 1}, // c evicts a
		{"b", 2}, {"a", 1}, // a is new again and evicts b
		{"c", 2}, {"b", 1},
	} {
		if got := a.record(key(step.key)); got != step.want {
			t.Fatalf("record(%s) = %d, want %d", step.key, got, step.want)
		}
	}
	for i := range 1000 {
		a.record(key(string(rune(i))))
	}
	if len(a.counts) != 2 || len(a.order) != 2 {
		t.Errorf("after 1000 keys: %d counts, %d in order; want 2", len(a.counts), len(a.order))
	}
}
