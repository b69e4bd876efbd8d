package main

import (
	"maps"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/hashicorp/consul/api"

	"github.com/leakytokens/leaky/controlplane/model"
	"github.com/leakytokens/leaky/internal/testenv"
)

// The end-to-end tests of `leaky dev -consul-addr`: the control plane on a
// private Consul agent (the policy from its KV key, every endpoint from
// its catalog, where every piece registered itself), the client's calls
// through the gateway stand-in.

// consulE2E is the request path on a private agent, a client of the
// agent and a user with an API key.
type consulE2E struct {
	root   *testing.T // the test: what outlives a step (the stubs it starts) is stopped at its end
	s      *stack
	agent  *testenv.ConsulAgent
	client *api.Client
	u      e2eUser
}

func newConsulE2E(t *testing.T) *consulE2E {
	t.Helper()
	agent := testenv.StartConsul(t)
	client, err := api.NewClient(&api.Config{Address: agent.Addr})
	if err != nil {
		t.Fatal(err)
	}
	c := &consulE2E{root: t, s: newStack(t, e2ePolicy, "-consul-addr", agent.Addr), agent: agent, client: client}
	c.u = c.s.newUser("carla")
	if a := c.s.complete(withKey(c.u, nil), 5); a.status != http.StatusOK || limitOf(a) != "4000" {
		t.Fatalf("a completion on Consul: want 200 under the free tier's 4000, got %s", a)
	}
	return c
}

// in is c for the subtest t.
func (c *consulE2E) in(t *testing.T) *consulE2E {
	cc := *c
	cc.s = c.s.in(t)
	return &cc
}

// listeners are dev's listeners the gateway routes to, by catalog name.
func (c *consulE2E) listeners() map[string][]string {
	d := c.s.d
	out := map[string][]string{
		model.ServiceAuthzGRPC: {d.az.GRPCAddr()}, model.ServiceAuthzHTTP: {d.az.HTTPAddr()},
		model.ServiceRatelimitGRPC: {d.rl.GRPCAddr()}, model.ServiceRatelimitHTTP: {d.rl.HTTPAddr()},
	}
	for name, addr := range d.stub.Addrs() {
		out[model.ProviderService(name)] = []string{addr}
	}
	return out
}

// Every endpoint the gateway routes to comes from the catalog, where dev's
// pieces registered themselves; a second OpenAI instance registered and
// the first stopped, completions keep passing and reach the second; the
// last instance gone, the gateway keeps its last endpoints and the
// control plane's /readyz names the service, until one registers again.
func TestE2EConsulEndpointsFollowTheCatalog(t *testing.T) {
	c := newConsulE2E(t)
	var second *extStub
	steps := []struct {
		name string
		run  func(*consulE2E)
	}{
		{"every endpoint from the catalog", (*consulE2E).endpointsFromCatalog},
		{"a second instance replaces the first", func(c *consulE2E) { second = c.replaceOpenAI() }},
		{"the last instance gone, then one again", func(c *consulE2E) { c.lastInstanceGone(second) }},
	}
	for _, st := range steps {
		if !t.Run(st.name, func(t *testing.T) { st.run(c.in(t)) }) {
			return // the next steps start from this one's outcome
		}
	}
}

// endpointsFromCatalog: the gateway's endpoints are the catalog's, which
// are dev's listeners; nothing is pinned: an instance of every service
// added to the catalog (never called: no check, an address nothing
// listens on) reaches the gateway and leaves it with its deregistration;
// the control plane's HTTP listener is in the catalog too.
func (c *consulE2E) endpointsFromCatalog() {
	s, bound := c.s, c.listeners()
	s.waitFor("the gateway's endpoints to be the catalog's, which are dev's listeners", func() (bool, string) {
		gw := s.gatewayEndpoints()
		if diff := cmp.Diff(bound, gw); diff != "" {
			return false, "the gateway's endpoints (-dev's listeners +gateway):\n" + diff
		}
		cat := catalogEndpoints(s.t, c.client, slices.Collect(maps.Keys(gw)))
		return cmp.Equal(gw, cat), "the catalog: " + cmp.Diff(gw, cat)
	})
	const decoy = "192.0.2.1:9" // TEST-NET-1
	withDecoys := map[string][]string{}
	for name, addrs := range bound {
		withDecoys[name] = sorted(append([]string{decoy}, addrs...)...)
		reg := &api.AgentServiceRegistration{ID: name + "-decoy", Name: name, Address: "192.0.2.1", Port: 9}
		if err := c.client.Agent().ServiceRegister(reg); err != nil {
			s.t.Fatal(err)
		}
	}
	s.waitFor("the decoys at the gateway", func() (bool, string) {
		gw := s.gatewayEndpoints()
		return cmp.Equal(withDecoys, gw), cmp.Diff(withDecoys, gw)
	})
	for name := range bound {
		if err := c.client.Agent().ServiceDeregister(name + "-decoy"); err != nil {
			s.t.Fatal(err)
		}
	}
	s.waitFor("the decoys gone from the gateway", func() (bool, string) {
		gw := s.gatewayEndpoints()
		return cmp.Equal(bound, gw), cmp.Diff(bound, gw)
	})
	cp := map[string][]string{model.ServiceControlplaneHTTP: {s.d.cp.HTTPAddr()}}
	s.waitFor("the control plane's HTTP listener in the catalog", func() (bool, string) {
		got := catalogEndpoints(s.t, c.client, []string{model.ServiceControlplaneHTTP})
		return cmp.Equal(cp, got), cmp.Diff(cp, got)
	})
}

// replaceOpenAI registers a second OpenAI stub, stops dev's stubs (which
// deregister as they stop) and checks that every completion passes and
// reaches the second, before and after the gateway drops the first.
func (c *consulE2E) replaceOpenAI() *extStub {
	s, openai := c.s, model.ProviderService("openai")
	first, second := s.d.stub.Addrs()["openai"], c.startStub()
	s.waitFor("both OpenAI instances at the gateway", func() (bool, string) {
		got := s.gatewayEndpoints()[openai]
		return cmp.Equal(got, sorted(first, second.addr)), strings.Join(got, ",")
	})
	s.stopPiece("providers-stub")
	reached, calls := second.requests(s), 0
	call := func() {
		calls++
		if a := s.complete(withKey(c.u, nil), 5); a.status != http.StatusOK {
			s.t.Errorf("call %d after the first instance stopped: want 200, got %s", calls, a)
		}
	}
	for range 3 { // the stopped instance deregistered as it stopped: the calls pass on the other
		call()
	}
	s.waitFor("the gateway to drop the stopped instance", func() (bool, string) {
		got := s.gatewayEndpoints()[openai]
		return cmp.Equal(got, []string{second.addr}), strings.Join(got, ",")
	})
	for range 3 {
		call()
	}
	if got := second.requests(s) - reached; got != float64(calls) {
		s.t.Errorf("the second instance answered %v of the %d completions", got, calls)
	}
	return second
}

// lastInstanceGone stops the last OpenAI instance: the gateway keeps it
// (503 from its dead address) and the control plane's /readyz names the
// service; a new instance registered, completions pass again on it.
func (c *consulE2E) lastInstanceGone(last *extStub) {
	s, openai := c.s, model.ProviderService("openai")
	last.stop(s.t)
	s.waitFor("the control plane's /readyz to name "+openai, func() (bool, string) {
		code, body := s.controlplaneReadyz()
		return code == http.StatusOK && strings.Contains(body, "service "+openai+": no healthy instance; serving its last 1 endpoint(s)"), body
	})
	if got := s.gatewayEndpoints()[openai]; !cmp.Equal(got, []string{last.addr}) {
		s.t.Errorf("the gateway's %s endpoints with no instance left = %v, want the last one kept, %s", openai, got, last.addr)
	}
	if a := s.complete(withKey(c.u, nil), 5); a.status != http.StatusServiceUnavailable {
		s.t.Errorf("a completion to the stopped last instance: want 503, got %s", a)
	}
	next := c.startStub()
	s.waitFor("a completion to pass on an instance registered again", func() (bool, string) {
		a := s.complete(withKey(c.u, nil), 5)
		return a.status == http.StatusOK, a.String()
	})
	if got := next.requests(s); got < 1 {
		s.t.Errorf("the new instance answered %v completions, want the one that passed", got)
	}
	s.waitFor("the control plane's /readyz to no longer name "+openai, func() (bool, string) {
		_, body := s.controlplaneReadyz()
		return !strings.Contains(body, openai), body
	})
}

// A write of the policy to the KV key reaches the gateway's answers
// (logged: how long it took) and an admin PUT writes the key; the agent
// stopped and started empty, every piece registers again, the key is
// seeded again with the policy in effect, the control plane is well again
// and the path works under the policy in effect.
func TestE2EConsulPolicyKeyAndAgentRestart(t *testing.T) {
	c := newConsulE2E(t)
	if !t.Run("the policy key", func(t *testing.T) { c.in(t).policyKey() }) {
		return
	}
	t.Run("the agent restarted empty", func(t *testing.T) { c.in(t).agentRestart() })
}

// startStub runs a `leaky providers-stub -consul-addr` serving OpenAI,
// stopped at the end of the test unless stopped before.
func (c *consulE2E) startStub() *extStub {
	st := startStub(c.s.t, c.agent.Addr)
	c.root.Cleanup(func() { st.stop(c.root) })
	return st
}

// policyKeyName is the control plane's default policy key.
const policyKeyName = "leaky/policy"

// policyKey writes the key (the free tier's OpenAI bucket 4000 → 4500) and
// measures until the gateway's answers show it; then a tier PUT of the
// admin API (→ 5000) is applied and written to the key.
func (c *consulE2E) policyKey() {
	s := c.s
	value := s.kvValue(c.client, policyKeyName)
	edited := strings.Replace(value, "openai: {capacity: 4000, leak_rate: 0.001}", "openai: {capacity: 4500, leak_rate: 0.001}", 1)
	if edited == value {
		s.t.Fatalf("the policy key holds no free-tier openai bucket of 4000 to change:\n%s", value)
	}
	start := time.Now()
	if _, err := c.client.KV().Put(&api.KVPair{Key: policyKeyName, Value: []byte(edited)}, nil); err != nil {
		s.t.Fatal(err)
	}
	s.t.Logf("a KV write of the policy reached the gateway's answers in %s", s.waitLimit(c.u, "4500", start))

	var put struct {
		Applied bool `json:"applied"`
	}
	s.decode(http.StatusOK, http.MethodPut, "http://"+s.d.cp.HTTPAddr()+"/api/v1/admin/tiers/free",
		map[string]string{"Authorization": "Bearer " + s.adminToken()},
		`{"priority":10,"roles":["USER"],"buckets":{"*":{"capacity":2000,"leak_rate":0.001},"openai":{"capacity":5000,"leak_rate":0.001}}}`, &put)
	if !put.Applied {
		s.t.Fatal("the tier PUT answered 200 without applied")
	}
	if v := s.kvValue(c.client, policyKeyName); !strings.Contains(v, "openai: {capacity: 5000") {
		s.t.Fatalf("the tier PUT did not write the key:\n%s", v)
	}
	if a := s.complete(withKey(c.u, nil), 5); a.status != http.StatusOK || limitOf(a) != "5000" {
		s.t.Fatalf("after the tier PUT: want 200 under 5000, got %s", a)
	}
}

// agentRestart stops the agent (the control plane's /readyz names the
// catalog) and starts it empty: every piece registers again, the key is
// seeded again with the policy in effect (policyKey's 5000), the control
// plane is well again and a completion passes under that policy.
func (c *consulE2E) agentRestart() {
	s, registered := c.s, c.listeners()
	registered[model.ServiceControlplaneHTTP] = []string{s.d.cp.HTTPAddr()}
	c.agent.Stop()
	s.waitFor("the control plane's /readyz to name the catalog", func() (bool, string) {
		_, body := s.controlplaneReadyz()
		return strings.Contains(body, `"catalog: `), body
	})
	if err := c.agent.Start(); err != nil {
		s.t.Fatal(err)
	}
	s.waitFor("every piece registered again in the emptied agent", func() (bool, string) {
		got := catalogEndpoints(s.t, c.client, slices.Collect(maps.Keys(registered)))
		return cmp.Equal(registered, got), cmp.Diff(registered, got)
	})
	s.waitFor("the key seeded again with the policy in effect", func() (bool, string) {
		v := s.kvValue(c.client, policyKeyName)
		return strings.Contains(v, "openai: {capacity: 5000"), v
	})
	s.waitFor("the control plane well again", func() (bool, string) {
		code, body := s.controlplaneReadyz()
		return code == http.StatusOK && strings.Contains(body, `"status":"ok"`), body
	})
	if a := s.complete(withKey(c.u, nil), 5); a.status != http.StatusOK || limitOf(a) != "5000" {
		s.t.Errorf("after the agent's restart: want 200 under 5000, got %s", a)
	}
}
