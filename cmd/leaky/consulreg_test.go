package main

import (
	"context"
	"regexp"
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
