package controlplane

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/google/go-cmp/cmp"
	"github.com/hashicorp/consul/api"

	"github.com/leakytokens/leaky/controlplane/consul"
	"github.com/leakytokens/leaky/controlplane/model"
	"github.com/leakytokens/leaky/internal/policy"
	"github.com/leakytokens/leaky/internal/testenv"
)

// agentClient is controlplane/consul on a real agent, as cmd/leaky wires
// it.
type agentClient struct{ c *api.Client }

func (a agentClient) WatchServices(ctx context.Context, names []string, report func(map[string][]model.Endpoint, error)) {
	consul.WatchServices(ctx, a.c, names, report)
}

func (a agentClient) WatchKey(ctx context.Context, key string, report func([]byte, uint64, bool, error)) {
	consul.WatchKey(ctx, a.c, key, report)
}

func (a agentClient) PutKeyCAS(ctx context.Context, key string, value []byte, index uint64) (bool, error) {
	return consul.PutKeyCAS(ctx, a.c, key, value, index)
}

// agentFixture is a private Consul agent and what the test registered.
type agentFixture struct {
	t      *testing.T
	agent  *testenv.ConsulAgent
	client *api.Client
	health string // an HTTP check URL that passes
}

func (f *agentFixture) register(name, id string, port int) {
	f.t.Helper()
	_, err := consul.Register(context.Background(), f.client, consul.Registration{Name: name, ID: id, Address: "127.0.0.1", Port: port, HealthURL: f.health})
	if err != nil {
		f.t.Fatal(err)
	}
}

func (f *agentFixture) deregister(id string) {
	f.t.Helper()
	if err := f.client.Agent().ServiceDeregister(id); err != nil {
		f.t.Fatal(err)
	}
}

// registerRequired registers one instance of every required service of
// the example policy, on ports from 21000 (requiredPort).
func (f *agentFixture) registerRequired() {
	for _, s := range model.Required(mustExample()) {
		f.register(s, s, requiredPort(s))
	}
}

// requiredPort is the port registerRequired gives service s.
func requiredPort(s string) int { return 21000 + slices.Index(model.Required(mustExample()), s) }

func (f *agentFixture) key(key string) string {
	f.t.Helper()
	pair, _, err := f.client.KV().Get(key, nil)
	if err != nil {
		f.t.Fatal(err)
	}
	if pair == nil {
		return ""
	}
	return string(pair.Value)
}

// The Consul source on a real agent: the key seeded, a KV write and an
// admin PUT pushed, a catalog change pushed as EDS, a service's last
// instance gone kept and flagged, and the agent stopped and started again
// empty: the last snapshot serves meanwhile, the key is seeded again with
// the policy in effect, and once the services are back the control plane
// is well with the same version.
func TestConsulAgent(t *testing.T) {
	agent := testenv.StartConsul(t)
	client, err := api.NewClient(&api.Config{Address: agent.Addr})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	t.Cleanup(hs.Close)
	f := &agentFixture{t: t, agent: agent, client: client, health: hs.URL}
	f.registerRequired()

	is := newIssuer(t)
	cfg := testConfig(writePolicy(t, policy.Example()), is)
	cfg.ConsulAddr = agent.Addr
	c := startCP(t, cfg, Deps{Catalog: agentClient{client}, KV: agentClient{client}})
	eventually(t, "the key seeded and a first push", func() bool {
		return f.key(cfg.ConsulPolicyKey) == string(policy.Example()) && c.Version() != ""
	})
	ads := dialADS(t, c.XDSAddr(), "ratelimit-1")
	ads.subscribe(resource.RuntimeType, model.RuntimeName)
	gw := dialADS(t, c.XDSAddr(), "gateway-1")
	openai := model.ProviderService("openai")
	gw.subscribe(resource.EndpointType, openai)

	edited := strings.Replace(string(policy.Example()), exampleFreeStar, `"*": {capacity: 3000, leak_rate: 20}`, 1)
	if _, err := client.KV().Put(&api.KVPair{Key: cfg.ConsulPolicyKey, Value: []byte(edited)}, nil); err != nil {
		t.Fatal(err)
	}
	r := ads.ack(ads.recv(), []string{model.RuntimeName})
	if got := runtimePolicy(t, r).Tiers["free"].Buckets["*"].Capacity; got != 3000 {
		t.Fatalf("after a KV write: free * capacity = %d, want 3000", got)
	}
	done := c.putAsync("/api/v1/admin/tiers/pro", is.token(t, []string{"ADMIN"}, nil),
		[]byte(`{"priority":50,"roles":["PRO"],"buckets":{"*":{"capacity":25000,"leak_rate":250}}}`))
	r = ads.ack(ads.recv(), []string{model.RuntimeName}) // the PUT answers once it is acknowledged
	if code, body := c.answer(done); code != 200 || !strings.Contains(f.key(cfg.ConsulPolicyKey), "capacity: 25000") {
		t.Fatalf("PUT pro = %d %s; want 200 and the key rewritten", code, body)
	}
	if got := runtimePolicy(t, r).Tiers["pro"].Buckets["*"].Capacity; got != 25000 {
		t.Errorf("after the PUT: pro * capacity = %d, want 25000", got)
	}

	f.register(openai, "openai-2", 21100)
	want := map[string][]string{openai: {fmt.Sprintf("127.0.0.1:%d", requiredPort(openai)), "127.0.0.1:21100"}}
	gw.ackUntil([]string{openai}, func(r *discovery.DiscoveryResponse) bool { return cmp.Equal(want, assignments(t, r)) })

	f.deregister(openai) // one left: pushed
	want = map[string][]string{openai: {"127.0.0.1:21100"}}
	gw.ackUntil([]string{openai}, func(r *discovery.DiscoveryResponse) bool { return cmp.Equal(want, assignments(t, r)) })
	version := c.Version() // first: it waits for the push the answer came from to be counted
	pushes := c.pushes()
	f.deregister("openai-2") // none left: kept
	eventually(t, "openai's endpoints kept, degraded", func() bool {
		code, reasons := c.degradedReasons()
		return code == 200 && strings.Contains(reasons, "service "+openai+": no healthy instance; serving its last 1 endpoint(s)")
	})
	if c.pushes() != pushes || c.Version() != version {
		t.Errorf("after openai's last instance left: pushes %v version %s, want %v %s", c.pushes(), c.Version(), pushes, version)
	}
	f.register(openai, openai, requiredPort(openai))
	f.register(openai, "openai-2", 21100)
	want = map[string][]string{openai: {fmt.Sprintf("127.0.0.1:%d", requiredPort(openai)), "127.0.0.1:21100"}}
	gw.ackUntil([]string{openai}, func(r *discovery.DiscoveryResponse) bool { return cmp.Equal(want, assignments(t, r)) })
	eventually(t, "ok again", func() bool { code, reasons := c.degradedReasons(); return code == 200 && reasons == "null" })
	policyText, version := f.key(cfg.ConsulPolicyKey), c.Version()

	agent.Stop()
	eventually(t, "degraded while the agent is down", func() bool {
		code, reasons := c.degradedReasons()
		return code == 200 && strings.Contains(reasons, "catalog:") && strings.Contains(reasons, "policy:")
	})
	if c.Version() != version {
		t.Errorf("version while the agent is down = %s, want the last %s", c.Version(), version)
	}
	if err := agent.Start(); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the key seeded again with the policy in effect", func() bool { return f.key(cfg.ConsulPolicyKey) == policyText })
	f.registerRequired()
	f.register(openai, "openai-2", 21100)
	eventually(t, "ok again after the agent's restart, on the same endpoints", func() bool {
		code, reasons := c.degradedReasons()
		return code == 200 && reasons == "null" && c.Version() == version
	})
	if c.Version() != version {
		t.Errorf("version after the agent's restart = %s, want %s (same policy, same endpoints)", c.Version(), version)
	}
}
