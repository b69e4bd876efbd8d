package loadgen

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
)

// LoginLoad is a background load of wrong-password logins on the authz
// REST API (POST /api/v1/auth/login): each costs the service one argon2id
// verification, the most CPU one unauthenticated request can ask for. Run
// beside a Check load, it shows whether password hashing starves Check.
type LoginLoad struct {
	Base     string // base URL of the REST API, e.g. http://127.0.0.1:8081
	Username string // the user to log in as; an existing one costs a real verification
	// PasswordBytes is the length of the wrong password (the service
	// accepts up to 256 bytes).
	PasswordBytes int
	Workers       int          // concurrent clients, each sending back to back
	Client        *http.Client // nil: one keeping a connection per worker
}

// LoginRun is a running LoginLoad.
type LoginRun struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu      sync.Mutex
	answers map[string]int64
}

// Start starts l's workers (none when Workers < 1); they run until Stop or
// ctx ends. The password is "x" repeated, never an enrolled user's
// (Enrol's are 32 hex digits).
func (l LoginLoad) Start(ctx context.Context) *LoginRun {
	ctx, cancel := context.WithCancel(ctx)
	r := &LoginRun{cancel: cancel, answers: make(map[string]int64)}
	client := l.Client
	if client == nil {
		// Keep-alive for every worker (the default keeps two idle
		// connections per host), so that logins, not TCP handshakes, load
		// the service.
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.MaxIdleConnsPerHost = max(1, l.Workers)
		client = &http.Client{Transport: tr}
	}
	body, _ := json.Marshal(map[string]string{"username": l.Username, "password": strings.Repeat("x", l.PasswordBytes)})
	url := strings.TrimRight(l.Base, "/") + "/api/v1/auth/login"
	for range l.Workers {
		r.wg.Go(func() {
			for ctx.Err() == nil {
				answer := login(ctx, client, url, body)
				if ctx.Err() != nil {
					return // cut short by Stop: not an answer
				}
				r.mu.Lock()
				r.answers[answer]++
				r.mu.Unlock()
			}
		})
	}
	return r
}

// login posts one login and names its answer: the HTTP status code
// ("401", "503", …) or "error" when no answer came.
func login(ctx context.Context, client *http.Client, url string, body []byte) string {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return "error"
	}
	req.Header.Set("content-type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return "error"
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxAnswer))
	resp.Body.Close()
	return strconv.Itoa(resp.StatusCode)
}

// Answers returns a copy of the answers so far by kind: the HTTP status
// ("401" for a refused login, "503" when the service's hashing queue was
// full) or "error".
func (r *LoginRun) Answers() map[string]int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	m := make(map[string]int64, len(r.answers))
	for k, v := range r.answers {
		m[k] = v
	}
	return m
}

// Stop stops the workers and waits for them.
func (r *LoginRun) Stop() {
	r.cancel()
	r.wg.Wait()
}

// Diff returns after minus before for every kind: the answers of a span.
func Diff(after, before map[string]int64) map[string]int64 {
	m := make(map[string]int64, len(after))
	for k, v := range after {
		if d := v - before[k]; d != 0 {
			m[k] = d
		}
	}
	return m
}
