package authz

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync/atomic"
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
	h := newPasswordHasher(64, 1, 1, 1)
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
// slot frees up before the request's deadline, and at once, whatever the
// deadline, when the queue for a slot is full.
func TestPasswordBusyAnswers503(t *testing.T) {
	ts := startService(t, nil, nil)
	ts.register(t, "busy")
	take := func(ch chan struct{}) func() {
		for range cap(ch) {
			ch <- struct{}{}
		}
		return func() {
			for range cap(ch) {
				<-ch
			}
		}
	}
	t.Cleanup(take(ts.hasher.slots))
	for _, queue := range []struct {
		name string
		full bool
	}{{"deadline", false}, {"queue full", true}} {
		for _, tt := range []struct{ name, path, body string }{
			{"login", "/api/v1/auth/login", `{"username":"busy","password":"password-busy"}`},
			{"login unknown user", "/api/v1/auth/login", `{"username":"nobody","password":"password-x"}`},
			{"register", "/api/v1/auth/register", `{"username":"busy2","email":"b2@example.com","password":"password-b2"}`},
		} {
			t.Run(queue.name+"/"+tt.name, func(t *testing.T) {
				ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
				if queue.full {
					// No deadline: only the full queue can end the wait.
					ctx, cancel = context.WithCancel(context.Background())
					defer take(ts.hasher.queue)()
				}
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
}

// A caller finding the queue for a slot full is refused at once, whatever
// its deadline; a waiter that gives up leaves the queue.
func TestPasswordHasherQueueBound(t *testing.T) {
	h := newPasswordHasher(64, 1, 1, 2)
	h.slots <- struct{}{} // the only slot is taken
	ctx, cancel := context.WithCancel(context.Background())
	waiters := make(chan error, cap(h.queue))
	for range cap(h.queue) {
		go func() {
			_, err := h.hash(ctx, "correct horse")
			waiters <- err
		}()
	}
	waitFor(t, "2 callers waiting for a slot", func() bool { return len(h.queue) == cap(h.queue) })

	done := make(chan error, 1)
	go func() {
		_, err := h.hash(context.Background(), "correct horse")
		done <- err
	}()
	select {
	case err := <-done:
		if !errors.Is(err, errHasherBusy) {
			t.Errorf("hash() with the queue full = %v, want errHasherBusy", err)
		}
	case <-time.After(10 * time.Second): // against a hang, with a margin for a loaded machine
		t.Fatal("hash() with the queue full and no deadline still waiting after 10s, want refused at once")
	}

	cancel()
	for range cap(h.queue) {
		if err := <-waiters; !errors.Is(err, errHasherBusy) || !errors.Is(err, context.Canceled) {
			t.Errorf("waiting hash() after cancel = %v, want errHasherBusy wrapping context.Canceled", err)
		}
	}
	if n := len(h.queue); n != 0 {
		t.Errorf("%d callers still queued after every waiter gave up, want 0", n)
	}
	<-h.slots
	if _, err := h.hash(context.Background(), "correct horse"); err != nil {
		t.Errorf("hash() with a free slot after the waiters left = %v", err)
	}
}

func TestDefaultHashersLeaveACore(t *testing.T) {
	for _, tt := range []struct{ procs, want int }{{1, 1}, {2, 1}, {3, 2}, {16, 15}} {
		if got := defaultHashers(tt.procs); got != tt.want {
			t.Errorf("defaultHashers(%d) = %d, want %d", tt.procs, got, tt.want)
		}
	}
}

// Sixteen concurrent wrong-password logins with the longest passwords run
// at most PasswordHashers argon2 hashes at once, by default one fewer than
// GOMAXPROCS (at least one), so a core stays free for Check; the others
// wait their turn and are then answered 401. The hash is held until every
// login is inside the hasher (running or queued), so the count is exact,
// not a matter of timing.
func TestLoginFloodRunsAtMostPasswordHashers(t *testing.T) {
	const logins = 16
	for _, tt := range []struct {
		name    string
		hashers int // Config.PasswordHashers
		want    int
	}{
		{"default", 0, defaultHashers(runtime.GOMAXPROCS(0))},
		{"configured", 3, 3},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ts := startService(t, nil, func(c *Config) { c.PasswordHashers = tt.hashers })
			ts.register(t, "flood")
			var running, most atomic.Int32
			release := make(chan struct{})
			kdf := ts.hasher.kdf
			ts.hasher.kdf = func(pw, salt []byte, time, mem uint32, p uint8, n uint32) []byte {
				r := running.Add(1)
				for m := most.Load(); r > m && !most.CompareAndSwap(m, r); m = most.Load() {
				}
				<-release
				defer running.Add(-1)
				return kdf(pw, salt, time, mem, p, n)
			}
			long := strings.Repeat("x", maxPasswordLen)
			codes := make(chan int, logins)
			for i := range logins {
				user := "flood"
				if i%2 == 1 {
					user = "nobody" // verified against the dummy hash
				}
				go func() {
					body := fmt.Sprintf(`{"username":%q,"password":%q}`, user, long)
					rec := httptest.NewRecorder()
					ts.handler.ServeHTTP(rec, httptest.NewRequest("POST", "/api/v1/auth/login", strings.NewReader(body)))
					codes <- rec.Code
				}()
			}
			waitFor(t, fmt.Sprintf("%d logins hashing or queued", logins), func() bool {
				return int(running.Load())+len(ts.hasher.queue) == logins
			})
			close(release)
			for range logins {
				if c := <-codes; c != http.StatusUnauthorized {
					t.Errorf("wrong-password login = %d, want 401", c)
				}
			}
			if got := int(most.Load()); got != tt.want {
				t.Errorf("%d concurrent logins ran %d argon2 hashes at once, want %d (PasswordHashers %d, GOMAXPROCS %d)",
					logins, got, tt.want, tt.hashers, runtime.GOMAXPROCS(0))
			}
		})
	}
}
