package authz

import (
	"strings"
	"testing"
)

func TestPasswordHasher(t *testing.T) {
	h := passwordHasher{memoryKiB: 64, time: 1, threads: 1}
	enc, err := h.hash("correct horse")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(enc, "$argon2id$v=19$m=64,t=1,p=1$") || strings.Contains(enc, "correct horse") {
		t.Fatalf("hash() = %q, want a PHC argon2id string without the password", enc)
	}
	other, _ := h.hash("correct horse")
	if other == enc {
		t.Error("hash() twice gave the same string; the salt is not random")
	}
	// A different cost at verification time must not matter.
	v := passwordHasher{memoryKiB: 1 << 20, time: 9, threads: 4}
	tests := []struct {
		name, enc, pw string
		ok            bool
		err           bool
	}{
		{"match", enc, "correct horse", true, false},
		{"mismatch", enc, "correct horse!", false, false},
		{"empty", enc, "", false, false},
		{"bcrypt string", "$2a$10$abcdefghijklmnopqrstuv", "x", false, true},
		{"garbage", "nope", "x", false, true},
		{"bad params", "$argon2id$v=19$m=x$c2FsdA$aGFzaA", "x", false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ok, err := v.verify(tt.enc, tt.pw)
			if ok != tt.ok || (err != nil) != tt.err {
				t.Errorf("verify(%s) = %v, %v, want %v, err %v", tt.name, ok, err, tt.ok, tt.err)
			}
		})
	}
}
