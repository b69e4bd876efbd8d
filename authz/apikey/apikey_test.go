package apikey

import (
	"strings"
	"testing"
)

func TestNewParseRoundTrip(t *testing.T) {
	seen := map[string]bool{}
	for range 200 {
		k, err := New()
		if err != nil {
			t.Fatal(err)
		}
		if len(k.String()) != Len {
			t.Fatalf("len(New()) = %d, want %d", len(k.String()), Len)
		}
		if seen[k.ID()] {
			t.Fatalf("New() repeated id %q", k.ID())
		}
		seen[k.ID()] = true
		got, err := Parse(k.String())
		if err != nil {
			t.Fatalf("Parse(New()) = %v, want nil", err)
		}
		if got.ID() != k.ID() || got.Digest() != k.Digest() {
			t.Fatalf("Parse(New()) = id %q, want %q", got.ID(), k.ID())
		}
		if !ValidID(k.ID()) {
			t.Fatalf("ValidID(%q) = false, want true", k.ID())
		}
	}
}

func TestParseRefuses(t *testing.T) {
	k, err := New()
	if err != nil {
		t.Fatal(err)
	}
	s := k.String()
	flip := func(i int) string {
		b := []byte(s)
		if b[i] == 'a' {
			b[i] = 'b'
		} else {
			b[i] = 'a'
		}
		return string(b)
	}
	tests := []struct {
		name string
		in   string
	}{
		{"empty", ""},
		{"wrong prefix", "lx" + s[2:]},
		{"seed format", "leaky_" + strings.Repeat("0", 51)},
		{"short", s[:len(s)-1]},
		{"long", s + "0"},
		{"secret changed", flip(len(Prefix) + idLen + 5)},
		{"id changed", flip(len(Prefix) + 2)},
		{"checksum changed", flip(len(s) - 1)},
		{"bad alphabet", s[:10] + "-" + s[11:]},
		{"no separator", s[:len(Prefix)+idLen] + "x" + s[len(Prefix)+idLen+1:]},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := Parse(tt.in); err != ErrMalformed {
				t.Errorf("Parse(%s) = %v, want ErrMalformed", tt.name, err)
			}
		})
	}
}

func TestEqual(t *testing.T) {
	a, _ := New()
	b, _ := New()
	if !Equal(a.Digest(), a.Digest()) {
		t.Error("Equal(a, a) = false, want true")
	}
	if Equal(a.Digest(), b.Digest()) {
		t.Error("Equal(a, b) = true, want false")
	}
}
