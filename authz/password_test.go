package authz

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/leakytokens/leaky/internal/serve"
)

func TestPasswordHasher(t *testing.T) {
	h := passwordHasher{memoryKiB: 64, time: 1, threads: 1}
	enc, err := h.hash(context.Background(), "correct horse")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(enc, "$argon2id$v=19$m=64,t=1,p=1$") || strings.Contains(enc, "correct horse") {
		t.Fatalf("hash() = %q, want a PHC argon2id string without the password", enc)
	}
	other, _ := h.hash(context.Background(), "correct horse")
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
			ok, err := v.verify(context.Background(), tt.enc, tt.pw)
			if ok != tt.ok || (err != nil) != tt.err {
				t.Errorf("verify(%s) = %v, %v, want %v, err %v", tt.name, ok, err, tt.ok, tt.err)
			}
		})
	}
}

// Waiting for an argon2 slot ends with the caller's context, so a flood of
// logins cannot queue requests past their deadline.
func TestPasswordHasherWaitObservesContext(t *testing.T) {
	h := newPasswordHasher(64, 1, 1)
	h.slots <- struct{}{} // the only slot is taken
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		_, err := h.hash(ctx, "correct horse")
		done <- err
	}()
	select {
	case err := <-done:
		if !errors.Is(err, errHasherBusy) || !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("hash() with every slot taken = %v, want errHasherBusy wrapping the deadline", err)
		}
	case <-time.After(10 * time.Second): // against a hang, with a margin for a loaded machine
		t.Fatal("hash() with every slot taken still waiting 10s after its 50ms deadline")
	}
}

// Login and registration answer 503 with the JSON envelope when no argon2
// slot frees up before the request's deadline.
func TestPasswordBusyAnswers503(t *testing.T) {
	ts := startService(t, nil, nil)
	ts.register(t, "busy")
	for range cap(ts.hasher.slots) {
		ts.hasher.slots <- struct{}{}
	}
	t.Cleanup(func() {
		for range cap(ts.hasher.slots) {
			<-ts.hasher.slots
		}
	})
	for _, tt := range []struct{ name, path, body string }{
		{"login", "/api/v1/auth/login", `{"username":"busy","password":"password-busy"}`},
		{"login unknown user", "/api/v1/auth/login", `{"username":"nobody","password":"password-x"}`},
		{"register", "/api/v1/auth/register", `{"username":"busy2","email":"b2@example.com","password":"password-b2"}`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
			defer cancel()
			req := httptest.NewRequestWithContext(ctx, "POST", tt.path, strings.NewReader(tt.body))
			rec := httptest.NewRecorder()
			ts.handler.ServeHTTP(rec, req)
			var body serve.ErrorBody
			if err := json.Unmarshal(rec.Body.Bytes(), &body); rec.Code != http.StatusServiceUnavailable || err != nil || body.Error != "unavailable" {
				t.Errorf("POST %s with every argon2 slot busy = %d %s, want 503 {\"error\":\"unavailable\"}", tt.path, rec.Code, rec.Body)
			}
		})
	}
}
