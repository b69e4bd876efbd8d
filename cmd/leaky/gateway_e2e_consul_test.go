package main

import (
	"context"
	"encoding/json"
	"io"
	"maps"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"github.com/google/go-cmp/cmp"
	"github.com/hashicorp/consul/api"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/leakytokens/leaky/controlplane/model"
	"github.com/leakytokens/leaky/internal/testenv"
)

// The end-to-end tests of `leaky dev -consul-addr`: the control plane on a
// private Consul agent (the policy from its KV key, every endpoint from
// its catalog, where every piece registered itself), the client's calls
// through the gateway stand-in.

// consulStack is the request path on a private agent, and a client of it.
func consulStack(t *testing.T) (*stack, *testenv.ConsulAgent, *api.Client) {
	t.Helper()
	agent := testenv.StartConsul(t)
	client, err := api.NewClient(&api.Config{Address: agent.Addr})
	if err != nil {
		t.Fatal(err)
	}
	return newStack(t, e2ePolicy, "-consul-addr", agent.Addr), agent, client
}

// Every endpoint the gateway routes to comes from the catalog, where dev's
// pieces registered themselves; a second OpenAI instance registered and
// the first stopped, completions keep passing and reach the second; the
// last instance gone, the gateway keeps its last endpoints and the
// control plane's /readyz names the service, until one registers again.
func TestE2EConsulEndpointsFollowTheCatalog(t *testing.T) {
	s, agent, client := consulStack(t)
	u := s.newUser("carla")
	if a := s.complete(withKey(u, nil), 5); a.status != http.StatusOK {
		t.Fatalf("a completion on Consul: want 200, got %s", a)
	}
	openai := model.ProviderService("openai")
	bound := map[string][]string{
		model.ServiceAuthzGRPC: {s.d.az.GRPCAddr()}, model.ServiceAuthzHTTP: {s.d.az.HTTPAddr()},
		model.ServiceRatelimitGRPC: {s.d.rl.GRPCAddr()}, model.ServiceRatelimitHTTP: {s.d.rl.HTTPAddr()},
	}
	for name, addr := range s.d.stub.Addrs() {
		bound[model.ProviderService(name)] = []string{addr}
	}
	s.waitFor("the gateway's endpoints to be the catalog's, which are dev's listeners", func() (bool, string) {
		gw := s.gatewayEndpoints()
		if diff := cmp.Diff(bound, gw); diff != "" {
			return false, "the gateway's endpoints (-dev's listeners +gateway):\n" + diff
		}
		cat := catalogEndpoints(s.t, client, slices.Collect(maps.Keys(gw)))
		return cmp.Equal(gw, cat), "the catalog: " + cmp.Diff(gw, cat)
	})
	// Nothing is pinned: an instance of every service added to the catalog
	// (never called: no check, an address nothing listens on) reaches the
	// gateway, and leaves it with its deregistration.
	const decoy = "192.0.2.1:9" // TEST-NET-1
	withDecoys := map[string][]string{}
	for name, addrs := range bound {
		withDecoys[name] = sorted(append([]string{decoy}, addrs...)...)
		reg := &api.AgentServiceRegistration{ID: name + "-decoy", Name: name, Address: "192.0.2.1", Port: 9}
		if err := client.Agent().ServiceRegister(reg); err != nil {
			t.Fatal(err)
		}
	}
	s.waitFor("the decoys at the gateway", func() (bool, string) {
		gw := s.gatewayEndpoints()
		return cmp.Equal(withDecoys, gw), cmp.Diff(withDecoys, gw)
	})
	for name := range bound {
		if err := client.Agent().ServiceDeregister(name + "-decoy"); err != nil {
			t.Fatal(err)
		}
	}
	s.waitFor("the decoys gone from the gateway", func() (bool, string) {
		gw := s.gatewayEndpoints()
		return cmp.Equal(bound, gw), cmp.Diff(bound, gw)
	})
	cp := map[string][]string{model.ServiceControlplaneHTTP: {s.d.cp.HTTPAddr()}}
	s.waitFor("the control plane's HTTP listener in the catalog", func() (bool, string) {
		got := catalogEndpoints(s.t, client, []string{model.ServiceControlplaneHTTP})
		return cmp.Equal(cp, got), cmp.Diff(cp, got)
	})

	first, second := s.d.stub.Addrs()["openai"], startStub(t, agent.Addr)
	s.waitFor("both OpenAI instances at the gateway", func() (bool, string) {
		got := s.gatewayEndpoints()[openai]
		return cmp.Equal(got, sorted(first, second.addr)), strings.Join(got, ",")
	})
	s.stopPiece("providers-stub") // dev's stubs: deregistered as they stop
	reached := second.requests(s)
	calls := 0
	call := func(want int) {
		s.t.Helper()
		calls++
		if a := s.complete(withKey(u, nil), 5); a.status != want {
			t.Errorf("call %d after the first instance stopped: want %d, got %s", calls, want, a)
		}
	}
	for range 3 { // a call meeting the stopped instance is retried on the other (connect-failure)
		call(http.StatusOK)
	}
	s.waitFor("the gateway to drop the stopped instance", func() (bool, string) {
		got := s.gatewayEndpoints()[openai]
		return cmp.Equal(got, []string{second.addr}), strings.Join(got, ",")
	})
	for range 3 {
		call(http.StatusOK)
	}
	if got := second.requests(s) - reached; got != float64(calls) {
		t.Errorf("the second instance answered %v of the %d completions", got, calls)
	}

	second.stop(t)
	s.waitFor("the control plane's /readyz to name "+openai, func() (bool, string) {
		code, body := s.controlplaneReadyz()
		return code == http.StatusOK && strings.Contains(body, "service "+openai+": no healthy instance; serving its last 1 endpoint(s)"), body
	})
	if got := s.gatewayEndpoints()[openai]; !cmp.Equal(got, []string{second.addr}) {
		t.Errorf("the gateway's %s endpoints with no instance left = %v, want the last one kept, %s", openai, got, second.addr)
	}
	if a := s.complete(withKey(u, nil), 5); a.status != http.StatusServiceUnavailable {
		t.Errorf("a completion to the stopped last instance: want 503, got %s", a)
	}

	third := startStub(t, agent.Addr)
	s.waitFor("a completion to pass on an instance registered again", func() (bool, string) {
		a := s.complete(withKey(u, nil), 5)
		return a.status == http.StatusOK, a.String()
	})
	if got := third.requests(s); got < 1 {
		t.Errorf("the new instance answered %v completions, want the one that passed", got)
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
	s, agent, client := consulStack(t)
	u := s.newUser("kim")
	if a := s.complete(withKey(u, nil), 5); a.status != http.StatusOK || limitOf(a) != "4000" {
		t.Fatalf("before any change: want 200 under the free tier's 4000, got %s", a)
	}
	const key = "leaky/policy"
	pair, _, err := client.KV().Get(key, nil)
	if err != nil || pair == nil {
		t.Fatalf("the policy key %s: %v %v", key, pair, err)
	}
	edited := strings.Replace(string(pair.Value), "openai: {capacity: 4000, leak_rate: 0.001}", "openai: {capacity: 4500, leak_rate: 0.001}", 1)
	if edited == string(pair.Value) {
		t.Fatalf("the policy key holds no free-tier openai bucket of 4000 to change:\n%s", pair.Value)
	}
	start := time.Now()
	if _, err := client.KV().Put(&api.KVPair{Key: key, Value: []byte(edited)}, nil); err != nil {
		t.Fatal(err)
	}
	t.Logf("a KV write of the policy reached the gateway's answers in %s", s.waitLimit(u, "4500", start))

	var put struct {
		Applied bool `json:"applied"`
	}
	s.decode(http.StatusOK, http.MethodPut, "http://"+s.d.cp.HTTPAddr()+"/api/v1/admin/tiers/free",
		map[string]string{"Authorization": "Bearer " + s.adminToken()},
		`{"priority":10,"roles":["USER"],"buckets":{"*":{"capacity":2000,"leak_rate":0.001},"openai":{"capacity":5000,"leak_rate":0.001}}}`, &put)
	if !put.Applied {
		t.Fatal("the tier PUT answered 200 without applied")
	}
	if v := s.kvValue(client, key); !strings.Contains(v, "openai: {capacity: 5000") {
		t.Fatalf("the tier PUT did not write the key:\n%s", v)
	}
	if a := s.complete(withKey(u, nil), 5); a.status != http.StatusOK || limitOf(a) != "5000" {
		t.Fatalf("after the tier PUT: want 200 under 5000, got %s", a)
	}

	registered := map[string][]string{
		model.ServiceAuthzGRPC: {s.d.az.GRPCAddr()}, model.ServiceAuthzHTTP: {s.d.az.HTTPAddr()},
		model.ServiceRatelimitGRPC: {s.d.rl.GRPCAddr()}, model.ServiceRatelimitHTTP: {s.d.rl.HTTPAddr()},
		model.ServiceControlplaneHTTP: {s.d.cp.HTTPAddr()},
	}
	for name, addr := range s.d.stub.Addrs() {
		registered[model.ProviderService(name)] = []string{addr}
	}
	agent.Stop()
	s.waitFor("the control plane's /readyz to name the catalog", func() (bool, string) {
		_, body := s.controlplaneReadyz()
		return strings.Contains(body, `"catalog: `), body
	})
	if err := agent.Start(); err != nil {
		t.Fatal(err)
	}
	s.waitFor("every piece registered again in the emptied agent", func() (bool, string) {
		got := catalogEndpoints(s.t, client, slices.Collect(maps.Keys(registered)))
		return cmp.Equal(registered, got), cmp.Diff(registered, got)
	})
	s.waitFor("the key seeded again with the policy in effect", func() (bool, string) {
		v := s.kvValue(client, key)
		return strings.Contains(v, "openai: {capacity: 5000"), v
	})
	s.waitFor("the control plane well again", func() (bool, string) {
		code, body := s.controlplaneReadyz()
		return code == http.StatusOK && strings.Contains(body, `"status":"ok"`), body
	})
	if a := s.complete(withKey(u, nil), 5); a.status != http.StatusOK || limitOf(a) != "5000" {
		t.Errorf("after the agent's restart: want 200 under 5000, got %s", a)
	}
}

// extStub is a `leaky providers-stub -consul-addr` serving OpenAI only,
// run in the test process.
type extStub struct {
	addr   string
	cancel context.CancelFunc
	done   chan error
}

// startStub runs a stub registered with the agent at consulAddr, stopped
// at the end of the test unless stopped before.
func startStub(t *testing.T, consulAddr string) *extStub {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	st := &extStub{cancel: cancel, done: make(chan error, 1)}
	var out syncBuffer
	go func() {
		st.done <- run(ctx, []string{"providers-stub", "-consul-addr", consulAddr,
			"-openai-addr", "127.0.0.1:0", "-gemini-addr", "", "-qwen-addr", ""}, testEnv(&out, &out, nil))
	}()
	t.Cleanup(func() { st.stop(t) })
	line := regexp.MustCompile(`providers-stub: openai http://(\S+)`)
	for deadline := time.Now().Add(pollBound); st.addr == ""; time.Sleep(20 * time.Millisecond) {
		if m := line.FindStringSubmatch(out.String()); m != nil {
			st.addr = m[1]
		} else if time.Now().After(deadline) {
			t.Fatalf("the stub did not start within %s:\n%s", pollBound, out.String())
		}
	}
	return st
}

// stop ends the stub and waits until it has deregistered; once.
func (st *extStub) stop(t *testing.T) {
	t.Helper()
	if st.cancel == nil {
		return
	}
	st.cancel()
	st.cancel = nil
	if err := <-st.done; err != nil {
		t.Errorf("providers-stub at %s: %v", st.addr, err)
	}
}

// requests is how many requests the stub answered.
func (st *extStub) requests(s *stack) float64 {
	return s.metric("http://"+st.addr+"/metrics", "leaky_stub_requests_total", map[string]string{"provider": "openai"})
}

// gatewayEndpoints are the endpoints of every cluster the gateway applied
// (cluster → sorted host:port; clusters without any left out), from its
// /config_dump.
func (s *stack) gatewayEndpoints() map[string][]string {
	s.t.Helper()
	resp, err := s.client.Get("http://" + s.d.gwAdmin + "/config_dump")
	if err != nil {
		s.t.Fatal(err)
	}
	defer resp.Body.Close()
	var dump struct {
		Endpoints []json.RawMessage `json:"endpoints"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&dump); err != nil {
		s.t.Fatalf("the gateway's /config_dump: %v", err)
	}
	out := map[string][]string{}
	for _, raw := range dump.Endpoints {
		var cla endpointv3.ClusterLoadAssignment
		if err := protojson.Unmarshal(raw, &cla); err != nil {
			s.t.Fatalf("the gateway's /config_dump: %v in %s", err, raw)
		}
		for _, l := range cla.GetEndpoints() {
			for _, e := range l.GetLbEndpoints() {
				a := e.GetEndpoint().GetAddress().GetSocketAddress()
				out[cla.GetClusterName()] = append(out[cla.GetClusterName()], (model.Endpoint{Host: a.GetAddress(), Port: a.GetPortValue()}).String())
			}
		}
	}
	for name := range out {
		slices.Sort(out[name])
	}
	return out
}

// catalogEndpoints are the passing instances of each named service
// (sorted host:port; services without any left out).
func catalogEndpoints(t *testing.T, c *api.Client, names []string) map[string][]string {
	t.Helper()
	out := map[string][]string{}
	for _, name := range names {
		entries, _, err := c.Health().Service(name, "", true, nil)
		if err != nil {
			t.Fatalf("the catalog's %s: %v", name, err)
		}
		for _, e := range entries {
			out[name] = append(out[name], (model.Endpoint{Host: e.Service.Address, Port: uint32(e.Service.Port)}).String())
		}
		slices.Sort(out[name])
	}
	return out
}

// kvValue is the key's value ("" when absent or the agent does not
// answer).
func (s *stack) kvValue(c *api.Client, key string) string {
	pair, _, err := c.KV().Get(key, nil)
	if err != nil || pair == nil {
		return ""
	}
	return string(pair.Value)
}

// controlplaneReadyz is the control plane's /readyz: status and body.
func (s *stack) controlplaneReadyz() (int, string) {
	s.t.Helper()
	resp, err := s.client.Get("http://" + s.d.cp.HTTPAddr() + "/readyz")
	if err != nil {
		s.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		s.t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

func sorted(s ...string) []string { return slices.Sorted(slices.Values(s)) }
