package controlplane

import (
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/leakytokens/leaky/controlplane/model"
	"github.com/leakytokens/leaky/internal/policy"
)

// These tests drive the Consul source through fakes with
// controlplane/consul's reporting rules; consul_agent_test.go runs it on a
// real agent.

// consulConfig is a configuration whose sources are Consul (fakes), with
// -policy seeding the key.
func consulConfig(t *testing.T, is *issuer) Config {
	cfg := testConfig(writePolicy(t, policy.Example()), is)
	cfg.ConsulAddr = "127.0.0.1:1" // not dialled: the fakes are the clients
	return cfg
}

// healthy registers one instance of every required service of the example
// policy, on distinct ports from base.
func healthy(cat *fakeCatalog, base uint32) {
	for i, s := range model.Required(mustExample()) {
		cat.set(s, model.Endpoint{Host: "127.0.0.1", Port: base + uint32(i)})
	}
}

func mustExample() *policy.Policy {
	p, err := policy.Parse("example", policy.Example())
	if err != nil {
		panic(err)
	}
	return p
}

// degradedReasons is /readyz's list of reasons, as one string.
func (c *cp) degradedReasons() (int, string) {
	code, body := c.readyz()
	b, _ := json.Marshal(body["degraded"])
	return code, string(b)
}

// The policy key is seeded from -policy when absent, followed, refused
// when invalid, and seeded again with the policy in effect when deleted;
// a KV outage leaves the last snapshot and is seen to end even when the
// value did not change.
func TestConsulKV(t *testing.T) {
	kv, cat := newFakeKV(), newFakeCatalog()
	healthy(cat, 20000)
	c := startCP(t, consulConfig(t, newIssuer(t)), Deps{KV: kv, Catalog: cat})
	eventually(t, "the key seeded and pushed", func() bool {
		v, _ := kv.get()
		return string(v) == string(policy.Example()) && c.Version() != ""
	})
	ads := dialADS(t, c.XDSAddr(), "ratelimit-1")
	ads.subscribe(resource.RuntimeType, model.RuntimeName)

	edited := strings.Replace(string(policy.Example()), exampleFreeStar, `"*": {capacity: 3000, leak_rate: 20}`, 1)
	kv.set([]byte(edited))
	r := ads.ack(ads.recv(), []string{model.RuntimeName})
	if got := runtimePolicy(t, r).Tiers["free"].Buckets["*"].Capacity; got != 3000 {
		t.Fatalf("after a KV write: free * capacity = %d, want 3000", got)
	}

	kv.setDown(errors.New("connection refused"))
	eventually(t, "/readyz to name the KV outage", func() bool {
		code, reasons := c.degradedReasons()
		return code == 200 && strings.Contains(reasons, "policy: connection refused")
	})
	kv.setDown(nil)
	eventually(t, "/readyz ok once the KV answers again, unchanged", func() bool {
		code, reasons := c.degradedReasons()
		return code == 200 && reasons == "null"
	})

	pushes := c.pushes()
	kv.set([]byte(strings.Replace(edited, "leak_rate: 20}", "leak_rate: -1}", 1)))
	eventually(t, "/readyz to name the invalid policy", func() bool {
		_, reasons := c.degradedReasons()
		return strings.Contains(reasons, "leak_rate")
	})
	if c.pushes() != pushes {
		t.Errorf("pushes after an invalid KV value = %v, want %v", c.pushes(), pushes)
	}

	kv.mu.Lock() // the key deleted (a -dev agent restarted)
	kv.value, kv.index = nil, 0
	kv.notify()
	kv.mu.Unlock()
	eventually(t, "the key seeded again with the policy in effect", func() bool {
		v, _ := kv.get()
		return string(v) == edited
	})
	if got := testutil.ToFloat64(c.m.sourceErrors.WithLabelValues("policy")); got < 2 {
		t.Errorf("source_errors_total{policy} = %v, want at least 2", got)
	}
}

// A PUT writes the key with CAS on the index it read: another writer in
// between makes it 409, and that writer's value stands.
func TestConsulPutTierCAS(t *testing.T) {
	is := newIssuer(t)
	kv, cat := newFakeKV(), newFakeCatalog()
	healthy(cat, 20000)
	c := startCP(t, consulConfig(t, is), Deps{KV: kv, Catalog: cat})
	eventually(t, "the first push", func() bool { return c.Version() != "" })
	admin := is.token(t, []string{"ADMIN"}, nil)
	body := []byte(`{"priority":10,"roles":["USER"],"buckets":{"*":{"capacity":2500,"leak_rate":20}}}`)

	code, ans := c.call("PUT", "/api/v1/admin/tiers/free", admin, body)
	if v, _ := kv.get(); code != 200 || !strings.Contains(string(v), "capacity: 2500") {
		t.Fatalf("PUT = %d %s, key %s: want 200 and the key rewritten", code, ans, v)
	}
	if got := c.pipeline.state().Config.Policy().Tiers["free"].Buckets["*"].Capacity; got != 2500 {
		t.Errorf("policy in effect after the PUT: free * capacity %d, want 2500", got)
	}

	other := strings.Replace(string(policy.Example()), exampleFreeStar, `"*": {capacity: 7777, leak_rate: 20}`, 1)
	kv.mu.Lock()
	kv.beforePut = func(k *fakeKV) { k.set([]byte(other)) }
	kv.mu.Unlock()
	code, ans = c.call("PUT", "/api/v1/admin/tiers/free", admin, body)
	if v, _ := kv.get(); code != 409 || !strings.Contains(ans, "another writer") || string(v) != other {
		t.Errorf("PUT racing another writer = %d %s, key %q: want 409 and the other writer's value", code, ans, v)
	}
}

// Endpoints come from the catalog: a required service never seen keeps the
// model from being pushed; a change is an EDS push; a service losing its
// last instance keeps its endpoints (degraded, counted); a catalog error
// is degraded until it answers again; a provider added to the policy is
// followed.
func TestConsulCatalog(t *testing.T) {
	kv, cat := newFakeKV(), newFakeCatalog()
	healthy(cat, 20000)
	openai := model.ProviderService("openai")
	cat.set(openai)
	is := newIssuer(t)
	cfg := consulConfig(t, is)
	cfg.Endpoints = map[string][]string{model.ServiceAuthzGRPC: {"127.0.0.1:9091"}} // pinned: not watched
	c := startCP(t, cfg, Deps{KV: kv, Catalog: cat})
	eventually(t, "not ready, naming openai", func() bool {
		code, reasons := c.degradedReasons()
		return code == 503 && strings.Contains(reasons, openai+": no healthy endpoint")
	})
	if slices.Contains(cat.names(), model.ServiceAuthzGRPC) || !slices.Contains(cat.names(), openai) ||
		!slices.Contains(cat.names(), model.ServiceControlplaneHTTP) {
		t.Errorf("catalog names = %v, want openai and %s, not the pinned %s", cat.names(), model.ServiceControlplaneHTTP, model.ServiceAuthzGRPC)
	}
	// A tier written while the model is refused is not in effect: 202,
	// saying why, never "applied".
	code, ans := c.call("PUT", "/api/v1/admin/tiers/pro", is.token(t, []string{"ADMIN"}, nil),
		[]byte(`{"priority":50,"roles":["PRO"],"buckets":{"*":{"capacity":21000,"leak_rate":210}}}`))
	if code != 202 || !strings.Contains(ans, `"applied":false`) || !strings.Contains(ans, openai+": no healthy endpoint") {
		t.Errorf("PUT while the model is refused = %d %s; want 202, not applied, naming %s", code, ans, openai)
	}

	a, b := model.Endpoint{Host: "127.0.0.1", Port: 30001}, model.Endpoint{Host: "127.0.0.2", Port: 30001}
	cat.set(openai, a)
	eventually(t, "the first push", func() bool { return c.Version() != "" })
	ads := dialADS(t, c.XDSAddr(), "gateway-1")
	ads.subscribe(resource.EndpointType, openai)
	cat.set(openai, a, b)
	r := ads.ack(ads.recv(), []string{openai})
	if diff := cmp.Diff(map[string][]string{openai: {a.String(), b.String()}}, assignments(t, r)); diff != "" {
		t.Errorf("EDS after a second instance (-want +got):\n%s", diff)
	}

	// Version first: it takes the pipeline's lock, so the push the ADS
	// answer came from has been counted by the time pushes is read.
	version := c.Version()
	pushes := c.pushes()
	cat.set(openai)
	eventually(t, "degraded, keeping openai's endpoints", func() bool {
		code, reasons := c.degradedReasons()
		return code == 200 && strings.Contains(reasons, "service "+openai+": no healthy instance; serving its last 2 endpoint(s)")
	})
	if c.pushes() != pushes || c.Version() != version {
		t.Errorf("after openai lost its instances: pushes %v version %s, want %v %s", c.pushes(), c.Version(), pushes, version)
	}
	if got := testutil.ToFloat64(c.m.endpointsKept.WithLabelValues(openai)); got != 1 {
		t.Errorf("endpoints_kept_total{%s} = %v, want 1", openai, got)
	}

	cat.setErr(errors.New("agent unreachable"))
	eventually(t, "degraded naming the catalog", func() bool {
		_, reasons := c.degradedReasons()
		return strings.Contains(reasons, "catalog: agent unreachable")
	})
	cat.set(openai, a)
	eventually(t, "ok again", func() bool {
		code, reasons := c.degradedReasons()
		return code == 200 && reasons == "null"
	})

	mistral := model.ProviderService("mistral")
	kv.set([]byte(strings.Replace(string(policy.Example()), "providers:\n", "providers:\n  mistral: {capacity: 1000, leak_rate: 10}\n", 1)))
	eventually(t, "mistral followed and required", func() bool {
		_, reasons := c.degradedReasons()
		return slices.Contains(cat.names(), mistral) && strings.Contains(reasons, mistral+": no healthy endpoint")
	})
	cat.set(mistral, model.Endpoint{Host: "127.0.0.1", Port: 30002})
	eventually(t, "mistral's cluster pushed", func() bool {
		st := c.pipeline.state()
		return st.Snap != nil && st.Snap.GetResources(resource.ClusterType)[mistral] != nil
	})

	// qwen loses its instances, then leaves the policy: forgotten.
	qwen := model.ProviderService("qwen")
	cat.set(qwen)
	eventually(t, "qwen kept, degraded", func() bool {
		_, reasons := c.degradedReasons()
		return strings.Contains(reasons, "service "+qwen+": no healthy instance")
	})
	v, _ := kv.get()
	noQwen := strings.Replace(strings.Replace(string(v), "  qwen:   {capacity: 500000,  leak_rate: 10000}\n", "", 1), "    qwen: /compatible-mode/\n", "", 1)
	if _, err := policy.FromContents("check", map[string][]byte{"p": []byte(noQwen)}); err != nil {
		t.Fatalf("the policy without qwen: %v", err)
	}
	kv.set([]byte(noQwen))
	eventually(t, "qwen forgotten", func() bool {
		code, reasons := c.degradedReasons()
		st := c.pipeline.state()
		return code == 200 && reasons == "null" && !slices.Contains(cat.names(), qwen) &&
			st.Snap.GetResources(resource.ClusterType)[qwen] == nil
	})
}
