package consul

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/leakytokens/leaky/controlplane/model"
	"github.com/leakytokens/leaky/internal/testenv"
)

// TestWatchersSurviveAnAgentRestart: a private agent stops (errors are
// reported, spaced by the backoff) and starts again with empty state (a
// -dev agent's index starts over): the watchers report the empty catalog and
// the absent key, then see a new registration and a new value.
func TestWatchersSurviveAnAgentRestart(t *testing.T) {
	agent := testenv.StartConsul(t)
	c := client(t, agent.Addr)
	h := newHealthServer(t)
	p := port(t, h.url)
	name, key := unique("svc"), unique("leaky-test")+"/policy"
	register(t, c, Registration{Name: name, ID: name + "-old", Address: "127.0.0.1", Port: p, HealthURL: h.url})
	if ok, err := PutKeyCAS(context.Background(), c, key, []byte("before"), 0); err != nil || !ok {
		t.Fatalf("PutKeyCAS = %v, %v", ok, err)
	}
	services := watchServices(t, c, name)
	keys := watchKey(t, c, key)
	awaitEndpoints(t, services, map[string][]model.Endpoint{name: {{Host: "127.0.0.1", Port: uint32(p)}}})
	awaitKey(t, keys, []byte("before"))

	stopped := time.Now()
	agent.Stop()
	var serviceErrs []error
	deadline := time.After(wait)
	for len(serviceErrs) < 4 {
		select {
		case r := <-services:
			if r.err == nil {
				t.Fatalf("a report without error while the agent is stopped: %v", r.eps)
			}
			serviceErrs = append(serviceErrs, r.err)
		case <-deadline:
			t.Fatalf("%d errors reported in %v with the agent stopped, want 4", len(serviceErrs), wait)
		}
	}
	if err := agent.Start(); err != nil {
		t.Fatalf("restart the agent: %v", err)
	}
	// Every error while stopped was reported and counted; the watcher
	// queried no more often than the backoff allows.
	errs := awaitEndpoints(t, services, map[string][]model.Endpoint{name: {}})
	serviceErrs = append(serviceErrs, errs...)
	if bound := maxAttempts(time.Since(stopped)); len(serviceErrs) > bound {
		t.Errorf("%d errors in %v, want at most %d (backoff)", len(serviceErrs), time.Since(stopped), bound)
	}
	for _, err := range serviceErrs {
		if !strings.Contains(err.Error(), name) {
			t.Errorf("error %q does not name the service %s", err, name)
		}
	}
	_, keyErrs := awaitKey(t, keys, nil)
	if len(keyErrs) == 0 {
		t.Error("WatchKey reported no error while the agent was stopped")
	}

	register(t, c, Registration{Name: name, ID: name + "-new", Address: "127.0.0.2", Port: p, HealthURL: h.url})
	awaitEndpoints(t, services, map[string][]model.Endpoint{name: {{Host: "127.0.0.2", Port: uint32(p)}}})
	if ok, err := PutKeyCAS(context.Background(), c, key, []byte("after"), 0); err != nil || !ok {
		t.Fatalf("PutKeyCAS after the restart = %v, %v", ok, err)
	}
	awaitKey(t, keys, []byte("after"))
}

// indexProxy stands between a watcher and the agent. For the queries on
// paths with its prefix it records the wait index of each query sent and the
// X-Consul-Index of each answer, and it can rewrite the index of the next
// answer, once. A watcher sends one query at a time, so answer i is the
// answer to query i.
type indexProxy struct {
	prefix    string
	mu        sync.Mutex
	sent      []string // the wait index of each query ("" when none)
	answered  []string // the index of each answer, as the watcher saw it
	rewrite   string   // the next answer's index when set
	rewroteAt int      // the position in answered of the rewritten answer
	rewrote   chan struct{}
}

func newIndexProxy(t *testing.T, agentAddr, prefix string) (*indexProxy, string) {
	target, err := url.Parse("http://" + agentAddr)
	if err != nil {
		t.Fatal(err)
	}
	ip := &indexProxy{prefix: prefix, rewroteAt: -1, rewrote: make(chan struct{}, 1)}
	rp := httputil.NewSingleHostReverseProxy(target)
	rp.ModifyResponse = func(resp *http.Response) error {
		if !strings.HasPrefix(resp.Request.URL.Path, prefix) {
			return nil
		}
		ip.mu.Lock()
		defer ip.mu.Unlock()
		if ip.rewrite != "" && resp.Header.Get("X-Consul-Index") != "" {
			resp.Header.Set("X-Consul-Index", ip.rewrite)
			ip.rewrite = ""
			ip.rewroteAt = len(ip.answered)
			ip.rewrote <- struct{}{}
		}
		ip.answered = append(ip.answered, resp.Header.Get("X-Consul-Index"))
		return nil
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, prefix) {
			ip.mu.Lock()
			ip.sent = append(ip.sent, r.URL.Query().Get("index"))
			ip.mu.Unlock()
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return ip, strings.TrimPrefix(srv.URL, "http://")
}

// arm makes the proxy rewrite the next answer's index to value.
func (ip *indexProxy) arm(value string) {
	ip.mu.Lock()
	defer ip.mu.Unlock()
	ip.rewrite = value
}

// await waits until n queries have been sent and returns the queries sent,
// the answers and the position of the rewritten answer (-1 if none).
func (ip *indexProxy) await(t *testing.T, n int) (sent, answered []string, rewroteAt int) {
	t.Helper()
	deadline := time.Now().Add(wait)
	for {
		ip.mu.Lock()
		sent, answered, rewroteAt = slices.Clone(ip.sent), slices.Clone(ip.answered), ip.rewroteAt
		ip.mu.Unlock()
		if len(sent) >= n {
			return sent, answered, rewroteAt
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v %d queries were sent (%v), want %d", wait, len(sent), sent, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestIndexGoingBackwardsStartsOver: an answer whose X-Consul-Index is
// below the index the query waited on makes the next query start over at 0
// (answered at once with the real index), after which the watcher blocks on
// the real index again and still sees changes.
func TestIndexGoingBackwardsStartsOver(t *testing.T) {
	addr := testenv.Consul(t)
	c := client(t, addr)
	name := unique("svc")
	ip, proxyAddr := newIndexProxy(t, addr, "/v1/health/service/"+name)
	h := newHealthServer(t)
	p := port(t, h.url)
	services := watchServices(t, client(t, proxyAddr), name)
	awaitEndpoints(t, services, map[string][]model.Endpoint{name: {}})
	sent, answered, _ := ip.await(t, 2) // the first query, and one blocking on its answer's index
	if sent[1] != answered[0] || sent[1] == "" || sent[1] == "0" {
		t.Fatalf("queries %v after answers %v: want the second to wait on the first answer's index", sent, answered)
	}

	ip.arm("1")
	register(t, c, Registration{Name: name, Address: "127.0.0.1", Port: p, HealthURL: h.url})
	select {
	case <-ip.rewrote:
	case <-time.After(wait):
		t.Fatal("no answer to rewrite after a registration")
	}
	awaitEndpoints(t, services, map[string][]model.Endpoint{name: {{Host: "127.0.0.1", Port: uint32(p)}}})
	_, _, at := ip.await(t, 0)
	sent, answered, _ = ip.await(t, at+3)
	// Query at+1 follows the rewritten answer: it starts over at 0; the
	// one after it blocks on the index the agent really answered.
	if w := sent[at+1]; w != "0" && w != "" {
		t.Errorf("after an index went backwards the next query waited on %q, want 0 (queries %v, answers %v)", w, sent, answered)
	}
	if w := sent[at+2]; w != answered[at+1] || w == "" || w == "0" {
		t.Errorf("the query after starting over waited on %q, want the agent's index %q (queries %v, answers %v)", w, answered[at+1], sent, answered)
	}

	// Still following: the instance goes away when its check fails.
	h.ok.Store(false)
	awaitEndpoints(t, services, map[string][]model.Endpoint{name: {}})
}

// TestIndexZeroIsTakenAsOne: an answer with X-Consul-Index 0 (a Consul bug
// the blocking-query docs warn about) makes the next query wait on 1, not
// 0, so that the watcher does not spin.
func TestIndexZeroIsTakenAsOne(t *testing.T) {
	addr := testenv.Consul(t)
	c := client(t, addr)
	key := unique("leaky-test") + "/policy"
	if ok, err := PutKeyCAS(context.Background(), c, key, []byte("v0"), 0); err != nil || !ok {
		t.Fatalf("PutKeyCAS = %v, %v", ok, err)
	}
	ip, proxyAddr := newIndexProxy(t, addr, "/v1/kv/"+key)
	ip.arm("0")
	keys := watchKey(t, client(t, proxyAddr), key)
	awaitKey(t, keys, []byte("v0"))
	sent, answered, at := ip.await(t, 3)
	if at != 0 || (sent[0] != "" && sent[0] != "0") {
		t.Fatalf("rewritten answer %d to query %q, want the first answer, to a query without index (queries %v)", at, sent[0], sent)
	}
	if sent[1] != "1" {
		t.Errorf("after an answer with index 0 the next query waited on %q, want 1 (queries %v, answers %v)", sent[1], sent, answered)
	}
	if sent[2] != answered[1] || sent[2] == "" || sent[2] == "0" || sent[2] == "1" {
		t.Errorf("the query after that waited on %q, want the key's index %q (queries %v, answers %v)", sent[2], answered[1], sent, answered)
	}
	if ok, err := PutKeyCAS(context.Background(), c, key, []byte("v1"), 0); err != nil || ok {
		t.Fatalf("PutKeyCAS over an existing key = %v, %v, want false", ok, err)
	}
	if _, err := c.KV().Delete(key, nil); err != nil {
		t.Fatal(err)
	}
	awaitKey(t, keys, nil)
}
