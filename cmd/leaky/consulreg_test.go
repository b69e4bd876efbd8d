package main

import (
	"context"
	"regexp"
	"strconv"
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
