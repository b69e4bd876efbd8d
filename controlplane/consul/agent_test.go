package consul

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/hashicorp/consul/api"

	"github.com/leakytokens/leaky/controlplane/model"
	"github.com/leakytokens/leaky/internal/testenv"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

// wait is how long a test waits for the agent to show a change: generous,
// for a loaded machine (health checks run every second).
const wait = 60 * time.Second

func client(t *testing.T, addr string) *api.Client {
	t.Helper()
	c, err := api.NewClient(&api.Config{Address: addr})
	if err != nil {
		t.Fatalf("consul client for %s: %v", addr, err)
	}
	return c
}

// unique is a service name or key component no other test uses on the
// shared agent.
func unique(prefix string) string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return prefix + "-" + hex.EncodeToString(b)
}

// healthServer answers 200 while ok is set and 500 otherwise.
type healthServer struct {
	ok  atomic.Bool
	url string
}

func newHealthServer(t *testing.T) *healthServer {
	h := &healthServer{}
	h.ok.Store(true)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		if !h.ok.Load() {
			http.Error(w, "unhealthy", http.StatusInternalServerError)
		}
	}))
	t.Cleanup(srv.Close)
	h.url = srv.URL
	return h
}

type servicesReport struct {
	eps map[string][]model.Endpoint
	err error
}

// watchServices runs WatchServices until the test ends; its reports go to
// the returned channel.
func watchServices(t *testing.T, c *api.Client, names ...string) <-chan servicesReport {
	ch := make(chan servicesReport, 1000)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		WatchServices(ctx, c, names, func(eps map[string][]model.Endpoint, err error) {
			ch <- servicesReport{eps, err}
		})
	}()
	t.Cleanup(func() { cancel(); <-done })
	return ch
}

// awaitEndpoints reads reports until one (without error) has want, and
// fails the test after wait. It returns the errors reported meanwhile.
func awaitEndpoints(t *testing.T, ch <-chan servicesReport, want map[string][]model.Endpoint) []error {
	t.Helper()
	var errs []error
	var last map[string][]model.Endpoint
	deadline := time.After(wait)
	for {
		select {
		case r := <-ch:
			if r.err != nil {
				errs = append(errs, r.err)
				continue
			}
			if r.eps == nil {
				t.Fatal("a report with neither endpoints nor an error")
			}
			last = r.eps
			if cmp.Equal(want, r.eps) {
				return errs
			}
		case <-deadline:
			t.Fatalf("after %v the last report was %v, want %v (errors: %v)", wait, last, want, errs)
		}
	}
}

func port(t *testing.T, rawURL string) int {
	t.Helper()
	_, p, err := net.SplitHostPort(rawURL[len("http://"):])
	if err != nil {
		t.Fatal(err)
	}
	n, _ := strconv.Atoi(p)
	return n
}

func register(t *testing.T, c *api.Client, r Registration) func(context.Context) error {
	t.Helper()
	deregister, err := Register(context.Background(), c, r)
	if err != nil {
		t.Fatalf("Register(%+v): %v", r, err)
	}
	t.Cleanup(func() { _ = deregister(context.Background()) })
	return deregister
}

func TestWatchServicesFollowsRegistrationAndHealth(t *testing.T) {
	c := client(t, testenv.Consul(t))
	name, empty := unique("svc"), unique("none")
	h := newHealthServer(t)
	p := port(t, h.url)
	ch := watchServices(t, c, name, empty)

	// Before any registration: every name present, with no endpoint.
	awaitEndpoints(t, ch, map[string][]model.Endpoint{name: {}, empty: {}})

	deregister := register(t, c, Registration{Name: name, ID: name + "-a", Address: "127.0.0.1", Port: p, HealthURL: h.url})
	// A second instance without an address is served on its node's (the agent binds 127.0.0.1).
	register(t, c, Registration{Name: name, ID: name + "-b", Port: p + 1, HealthURL: h.url})
	both := []model.Endpoint{{Host: "127.0.0.1", Port: uint32(p)}, {Host: "127.0.0.1", Port: uint32(p + 1)}}
	awaitEndpoints(t, ch, map[string][]model.Endpoint{name: both, empty: {}})

	h.ok.Store(false)
	awaitEndpoints(t, ch, map[string][]model.Endpoint{name: {}, empty: {}})
	h.ok.Store(true)
	awaitEndpoints(t, ch, map[string][]model.Endpoint{name: both, empty: {}})

	if err := deregister(context.Background()); err != nil {
		t.Fatalf("deregister: %v", err)
	}
	awaitEndpoints(t, ch, map[string][]model.Endpoint{name: both[1:], empty: {}})
}

func TestRegisterRefusesAnIncompleteInstance(t *testing.T) {
	c := client(t, testenv.Consul(t))
	for _, r := range []Registration{
		{Port: 80},
		{Name: "x", Port: 0},
		{Name: "x", Port: 65536},
	} {
		if _, err := Register(context.Background(), c, r); err == nil {
			t.Errorf("Register(%+v) = nil error, want one", r)
		}
	}
}

type keyReport struct {
	value  []byte
	index  uint64
	exists bool
	err    error
}

func watchKey(t *testing.T, c *api.Client, key string) <-chan keyReport {
	ch := make(chan keyReport, 1000)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		WatchKey(ctx, c, key, func(v []byte, idx uint64, exists bool, err error) { ch <- keyReport{v, idx, exists, err} })
	}()
	t.Cleanup(func() { cancel(); <-done })
	return ch
}

// awaitKey reads reports until one (without error) says exists with value
// (or absent when value is nil) and returns it; errors are returned too.
func awaitKey(t *testing.T, ch <-chan keyReport, value []byte) (keyReport, []error) {
	t.Helper()
	var errs []error
	deadline := time.After(wait)
	for {
		select {
		case r := <-ch:
			if r.err != nil {
				errs = append(errs, r.err)
				continue
			}
			if r.exists == (value != nil) && string(r.value) == string(value) {
				return r, errs
			}
		case <-deadline:
			t.Fatalf("after %v no report of value %q (errors: %v)", wait, value, errs)
		}
	}
}

func TestWatchKeyAndPutKeyCAS(t *testing.T) {
	c := client(t, testenv.Consul(t))
	key := unique("leaky-test") + "/policy"
	ctx := context.Background()
	ch := watchKey(t, c, key)

	first, _ := awaitKey(t, ch, nil)
	if first.index != 0 || first.value != nil {
		t.Errorf("absent key reported as %+v, want index 0 and no value", first)
	}
	cas := func(value string, index uint64, want bool) {
		t.Helper()
		ok, err := PutKeyCAS(ctx, c, key, []byte(value), index)
		if err != nil || ok != want {
			t.Fatalf("PutKeyCAS(%q, %d) = %v, %v, want %v", value, index, ok, err, want)
		}
	}
	cas("v1", 0, true)
	v1, _ := awaitKey(t, ch, []byte("v1"))
	if v1.index == 0 {
		t.Fatal("v1 reported with ModifyIndex 0")
	}
	cas("v2", 0, false) // 0 creates only an absent key
	cas("v2", v1.index, true)
	v2, _ := awaitKey(t, ch, []byte("v2"))
	if v2.index <= v1.index {
		t.Errorf("v2's ModifyIndex %d, want above v1's %d", v2.index, v1.index)
	}
	cas("v3", v1.index, false) // a stale index loses
	if _, err := c.KV().Delete(key, nil); err != nil {
		t.Fatal(err)
	}
	awaitKey(t, ch, nil)
	cas("", 0, true) // an empty value exists
	empty, _ := awaitKey(t, ch, []byte{})
	if !empty.exists {
		t.Error("an empty value reported as absent")
	}

	for _, bad := range []string{"", "/leading-slash"} {
		if ok, err := PutKeyCAS(ctx, c, bad, []byte("x"), 0); err == nil || ok {
			t.Errorf("PutKeyCAS(%q) = %v, %v, want an error", bad, ok, err)
		}
	}
}
