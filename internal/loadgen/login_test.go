package loadgen

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// The login load posts the user's name with a wrong password of the
// configured length, counts the answers by status, and stops sending when
// stopped.
func TestLoginLoad(t *testing.T) {
	var mu sync.Mutex
	var n int
	var bad []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var in struct{ Username, Password string }
		err := json.NewDecoder(r.Body).Decode(&in)
		mu.Lock()
		defer mu.Unlock()
		if r.Method != "POST" || r.URL.Path != "/api/v1/auth/login" || err != nil || in.Username != "loadgen-x" ||
			len(in.Password) != 256 || r.Header.Get("content-type") != "application/json" {
			bad = append(bad, r.Method+" "+r.URL.Path)
		}
		n++
		if n%4 == 0 {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		w.WriteHeader(http.StatusUnauthorized)
	}))
	defer srv.Close()

	var sent atomic.Int64
	client := &http.Client{Transport: roundTripFunc(func(r *http.Request) (*http.Response, error) {
		sent.Add(1)
		return http.DefaultTransport.RoundTrip(r)
	})}
	run := LoginLoad{Base: srv.URL + "/", Username: "loadgen-x", PasswordBytes: 256, Workers: 4, Client: client}.Start(context.Background())
	waitUntil(t, "8 logins answered", func() bool {
		a := run.Answers()
		return a["401"]+a["503"] >= 8
	})
	run.Stop()
	stopped, sentAtStop := run.Answers(), sent.Load()
	time.Sleep(50 * time.Millisecond) // let every request in flight reach the server
	mu.Lock()
	served := n
	if len(bad) > 0 {
		t.Errorf("the login load sent %v, want POST /api/v1/auth/login as loadgen-x with a 256-byte password", bad)
	}
	mu.Unlock()
	// A login cut short by Stop may have been served but is not counted:
	// at most one per worker.
	if c := stopped["401"] + stopped["503"]; stopped["401"] == 0 || stopped["503"] == 0 || len(stopped) != 2 ||
		c > int64(served) || c < int64(served-4) {
		t.Errorf("answers %v after %d logins served, want each counted under 401 or 503", stopped, served)
	}
	time.Sleep(50 * time.Millisecond)
	if s := sent.Load(); s != sentAtStop {
		t.Errorf("%d logins sent after Stop returned, want none", s-sentAtStop)
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func TestDiff(t *testing.T) {
	got := Diff(map[string]int64{"401": 10, "503": 2, "error": 1}, map[string]int64{"401": 4, "error": 1})
	if d := cmp.Diff(map[string]int64{"401": 6, "503": 2}, got); d != "" {
		t.Errorf("Diff (-want +got):\n%s", d)
	}
}

// waitUntil polls cond, failing after a minute (a hang guard, not a timing
// claim).
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(time.Minute); !cond(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no %s after a minute", what)
		}
	}
}

// A run with a login load beside it reports the logins' answers and rate.
func TestReportLogins(t *testing.T) {
	r := sampleReport(Closed)
	r.Target, r.Label = "authz", "jwt"
	r.LoginWorkers, r.Logins = 16, map[string]int64{"401": 120, "503": 5}
	var b strings.Builder
	if err := r.WriteText(&b); err != nil {
		t.Fatal(err)
	}
	if want := "  logins    16 wrong-password clients beside the run: 125 answered (12.5/s): 401 120 503 5\n"; !strings.Contains(b.String(), want) {
		t.Errorf("WriteText() = %q, want the line %q", b.String(), want)
	}
	j, err := r.JSON()
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		Workers int     `json:"login_workers"`
		Count   int64   `json:"logins"`
		Rate    float64 `json:"login_rate"`
		Busy    int64   `json:"login_503"`
	}
	if err := json.Unmarshal(j, &got); err != nil {
		t.Fatal(err)
	}
	if got.Workers != 16 || got.Count != 125 || got.Rate != 12.5 || got.Busy != 5 {
		t.Errorf("JSON() = %s, want login_workers 16, logins 125, login_rate 12.5, login_503 5", j)
	}
}
