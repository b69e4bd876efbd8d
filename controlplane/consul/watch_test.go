package consul

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/hashicorp/consul/api"

	"github.com/leakytokens/leaky/controlplane/model"
)

func TestNextIndex(t *testing.T) {
	tests := []struct {
		name      string
		prev, got uint64
		want      uint64
	}{
		{"first answer", 0, 42, 42},
		{"unchanged (the wait timed out)", 42, 42, 42},
		{"moved on", 42, 57, 57},
		{"went backwards: start over", 42, 7, 0},
		{"zero on the first answer is taken as one", 0, 0, 1},
		{"zero after a real index went backwards", 42, 0, 0},
		{"zero while waiting on one stays one", 1, 0, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := nextIndex(tt.prev, tt.got); got != tt.want {
				t.Errorf("nextIndex(%d, %d) = %d, want %d", tt.prev, tt.got, got, tt.want)
			}
		})
	}
}

func TestBackoffDoublesToTheCapWithJitter(t *testing.T) {
	ceilings := []time.Duration{100 * time.Millisecond, 200 * time.Millisecond, 400 * time.Millisecond,
		800 * time.Millisecond, 1600 * time.Millisecond, 3200 * time.Millisecond, 6400 * time.Millisecond,
		10 * time.Second, 10 * time.Second}
	for i, ceiling := range ceilings {
		for range 100 {
			if d := backoff(i + 1); d < ceiling/2 || d > ceiling {
				t.Fatalf("backoff(%d) = %v, want within [%v, %v]", i+1, d, ceiling/2, ceiling)
			}
		}
	}
	for _, n := range []int{20, 64, 1000} {
		if d := backoff(n); d < backoffMax/2 || d > backoffMax {
			t.Errorf("backoff(%d) = %v, want within [%v, %v]", n, d, backoffMax/2, backoffMax)
		}
	}
}

// maxAttempts is the most queries a watcher can send in elapsed when every
// one fails: the first at once, each next one after at least half of its
// backoff ceiling.
func maxAttempts(elapsed time.Duration) int {
	n, spent := 1, time.Duration(0)
	for f := 1; ; f++ {
		spent += min(backoffBase<<min(f-1, 20), backoffMax) / 2
		if spent > elapsed {
			return n
		}
		n++
	}
}

func TestEndpoints(t *testing.T) {
	entry := func(node, addr string, port int) *api.ServiceEntry {
		return &api.ServiceEntry{Node: &api.Node{Address: node}, Service: &api.AgentService{Address: addr, Port: port}}
	}
	tests := []struct {
		name    string
		entries []*api.ServiceEntry
		want    []model.Endpoint
	}{
		{"none", nil, []model.Endpoint{}},
		{"service address", []*api.ServiceEntry{entry("10.0.0.1", "127.0.0.2", 80)}, []model.Endpoint{{Host: "127.0.0.2", Port: 80}}},
		{"node address when the service has none", []*api.ServiceEntry{entry("10.0.0.1", "", 80)}, []model.Endpoint{{Host: "10.0.0.1", Port: 80}}},
		{"sorted and distinct", []*api.ServiceEntry{
			entry("n", "b", 2), entry("n", "a", 9), entry("n", "b", 1), entry("n", "a", 9),
		}, []model.Endpoint{{Host: "a", Port: 9}, {Host: "b", Port: 1}, {Host: "b", Port: 2}}},
		{"no port or no address left out", []*api.ServiceEntry{
			entry("n", "a", 0), entry("", "", 80), {Node: &api.Node{Address: "n"}}, entry("n", "a", 70000), entry("n", "c", 3),
		}, []model.Endpoint{{Host: "c", Port: 3}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := endpoints(tt.entries)
			if got == nil {
				t.Fatal("endpoints = nil, want a non-nil list")
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("endpoints (-want +got):\n%s", diff)
			}
		})
	}
}

// failingAgent answers the first query with an empty result at index 50 (no
// service instance, no key) and every later one 500; it records the wait
// index of each.
type failingAgent struct {
	mu      sync.Mutex
	indexes []string
}

func (f *failingAgent) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	f.indexes = append(f.indexes, r.URL.Query().Get("index"))
	first := len(f.indexes) == 1
	f.mu.Unlock()
	if !first {
		http.Error(w, "agent broken", http.StatusInternalServerError)
		return
	}
	w.Header().Set("X-Consul-Index", "50")
	if strings.HasPrefix(r.URL.Path, "/v1/kv/") {
		w.WriteHeader(http.StatusNotFound)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write([]byte("[]"))
}

func (f *failingAgent) seen() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.indexes...)
}

// TestErrorsBackOff: against an agent that answers once and then fails
// every query, each watcher reports the answer and every error, spaces its
// queries by the backoff (no busy loop), and after an error never waits on
// the index it had.
func TestErrorsBackOff(t *testing.T) {
	for _, watch := range []struct {
		name string
		run  func(ctx context.Context, c *api.Client, errs chan<- error)
	}{
		{"WatchKey", func(ctx context.Context, c *api.Client, errs chan<- error) {
			WatchKey(ctx, c, "k", func(_ []byte, _ uint64, _ bool, err error) { errs <- err })
		}},
		{"WatchServices", func(ctx context.Context, c *api.Client, errs chan<- error) {
			WatchServices(ctx, c, []string{"s"}, func(_ map[string][]model.Endpoint, err error) { errs <- err })
		}},
	} {
		t.Run(watch.name, func(t *testing.T) {
			agent := &failingAgent{}
			srv := httptest.NewServer(agent)
			defer srv.Close()
			c, err := api.NewClient(&api.Config{Address: strings.TrimPrefix(srv.URL, "http://")})
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			errs := make(chan error, 1000)
			done := make(chan struct{})
			start := time.Now()
			go func() { defer close(done); watch.run(ctx, c, errs) }()
			var reported []error
			answers := 0
			deadline := time.After(60 * time.Second)
			for len(reported) < 5 {
				select {
				case err := <-errs:
					if err == nil {
						answers++
						continue
					}
					reported = append(reported, err)
				case <-deadline:
					t.Fatalf("%d errors reported in 60 s, want 5", len(reported))
				}
			}
			cancel()
			<-done
			elapsed := time.Since(start)
			seen := agent.seen()
			if answers != 1 {
				t.Errorf("%d reports of the one answer, want 1", answers)
			}
			// The first answer comes at once and the second query fails at
			// once; every later query follows a backoff.
			if bound := 1 + maxAttempts(elapsed); len(seen) > bound {
				t.Errorf("%d queries in %v, want at most %d (backoff)", len(seen), elapsed, bound)
			}
			if len(seen) < 1+len(reported) {
				t.Errorf("%d queries for 1 answer and %d errors reported", len(seen), len(reported))
			}
			if seen[1] != "50" {
				t.Errorf("the second query waited on %q, want the first answer's index 50", seen[1])
			}
			for i, idx := range seen[2:] {
				if idx != "" && idx != "0" {
					t.Errorf("query %d waited on index %q after an error, want none (queries %v)", i+2, idx, seen)
				}
			}
			if !strings.Contains(reported[0].Error(), "agent broken") {
				t.Errorf("error = %v, want the agent's answer in it", reported[0])
			}
		})
	}
}
