package main

import (
	"context"
	"log/slog"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/leakytokens/leaky/controlplane/model"
	"github.com/leakytokens/leaky/internal/testenv"
)

// `leaky providers-stub -consul-addr` registers each provider in the
// catalog as leaky-provider-<name> with its /healthz as the check (so it
// is passing, as the control plane reads the catalog), and deregisters it
// when it stops.
func TestProvidersStubRegistersInConsul(t *testing.T) {
	addr := testenv.Consul(t)
	client, err := api.NewClient(&api.Config{Address: addr})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var stdout, stderr syncBuffer
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"providers-stub", "-consul-addr", addr,
			"-openai-addr", "127.0.0.1:0", "-gemini-addr", "", "-qwen-addr", ""}, testEnv(&stdout, &stderr, nil))
	}()
	line := regexp.MustCompile(`providers-stub: openai http://(\S+)`)
	var bound string
	for deadline := time.Now().Add(60 * time.Second); bound == ""; time.Sleep(20 * time.Millisecond) {
		if m := line.FindStringSubmatch(stdout.String()); m != nil {
			bound = m[1]
		} else if time.Now().After(deadline) {
			cancel()
			t.Fatalf("the stub did not start: %v\n%s", <-done, stderr.String())
		}
	}
	passing := func() []*api.ServiceEntry {
		t.Helper()
		entries, _, err := client.Health().Service(model.ProviderService("openai"), "", true, nil)
		if err != nil {
			t.Fatal(err)
		}
		var mine []*api.ServiceEntry
		for _, e := range entries {
			if e.Service.ID == model.ProviderService("openai")+"-"+bound {
				mine = append(mine, e)
			}
		}
		return mine
	}
	for deadline := time.Now().Add(30 * time.Second); len(passing()) == 0; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%s at %s is not a passing instance in the catalog", model.ProviderService("openai"), bound)
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("providers-stub: %v", err)
	}
	svcs, err := client.Agent().Services()
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := svcs[model.ProviderService("openai")+"-"+bound]; ok {
		t.Error("the instance is still registered after the stub stopped")
	}
}

// `leaky ratelimit -consul-addr` registers its gRPC and HTTP listeners,
// both checked through /readyz, so a control plane on Consul routes to
// them; they are gone from the agent when it stops.
func TestRatelimitRegistersInConsul(t *testing.T) {
	addr := testenv.Consul(t)
	client, err := api.NewClient(&api.Config{Address: addr})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var out syncBuffer
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"ratelimit", "-grpc-addr", "127.0.0.1:0", "-http-addr", "127.0.0.1:0"},
			testEnv(&out, &out, map[string]string{"CONSUL_HTTP_ADDR": "http://" + addr}))
	}()
	mine := func() map[string]bool {
		got := map[string]bool{}
		for _, name := range []string{model.ServiceRatelimitGRPC, model.ServiceRatelimitHTTP} {
			entries, _, err := client.Health().Service(name, "", true, nil)
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range entries {
				if e.Service.Address == "127.0.0.1" && e.Service.ID == name+"-"+e.Service.Address+":"+strconv.Itoa(e.Service.Port) {
					got[e.Service.ID] = true
				}
			}
		}
		return got
	}
	var ids map[string]bool
	for deadline := time.Now().Add(60 * time.Second); len(ids) < 2; time.Sleep(50 * time.Millisecond) {
		if ids = mine(); len(ids) < 2 && time.Now().After(deadline) {
			cancel()
			t.Fatalf("passing instances %v, want the gRPC and the HTTP listener (run: %v)", ids, <-done)
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("ratelimit: %v", err)
	}
	svcs, err := client.Agent().Services()
	if err != nil {
		t.Fatal(err)
	}
	for id := range ids {
		if _, ok := svcs[id]; ok {
			t.Errorf("%s is still registered after the service stopped", id)
		}
	}
}

// An instance the agent loses (deregistered behind the process's back, as
// by an agent restarted empty) is registered again by the resync loop
// within a few of its intervals; deregister stops the loop and removes it.
func TestRegisterInstancesReRegistersWhatTheAgentLost(t *testing.T) {
	addr := testenv.Consul(t)
	client, err := api.NewClient(&api.Config{Address: addr})
	if err != nil {
		t.Fatal(err)
	}
	name := "leaky-test-resync-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	id := name + "-127.0.0.1:9"
	deregister, err := registerInstances(t.Context(), slog.New(slog.DiscardHandler), addr, []instance{{name, "127.0.0.1:9", ""}})
	if err != nil {
		t.Fatal(err)
	}
	defer deregister()
	registered := func() bool {
		t.Helper()
		svcs, err := client.Agent().Services()
		if err != nil {
			t.Fatal(err)
		}
		_, ok := svcs[id]
		return ok
	}
	if !registered() {
		t.Fatalf("%s is not registered", id)
	}
	if err := client.Agent().ServiceDeregister(id); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(6 * consulResyncInterval); !registered(); time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%s was not registered again within %s", id, 6*consulResyncInterval)
		}
	}
	deregister()
	if registered() {
		t.Errorf("%s is still registered after deregister", id)
	}
}

// What a process announces must be an IP address and a port the gateway
// can dial: a wildcard, a name or no port is refused before the agent is
// asked.
func TestRegisterInstancesRefusesUndialableAddresses(t *testing.T) {
	for _, a := range []string{"0.0.0.0:8080", "[::]:8080", "localhost:8080", "127.0.0.1", "127.0.0.1:http"} {
		t.Run(a, func(t *testing.T) {
			_, err := registrations([]instance{{"leaky-x", a, ""}})
			if err == nil || !strings.Contains(err.Error(), "leaky-x") {
				t.Errorf("registrations(%q) = %v, want an error naming the service", a, err)
			}
		})
	}
}
