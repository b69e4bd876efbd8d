package main

import (
	"context"
	"encoding/json"
	"io"
	"regexp"
	"slices"
	"testing"
	"time"

	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"github.com/hashicorp/consul/api"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/leakytokens/leaky/controlplane/model"
)

// The clients of the Consul end-to-end tests: a provider stub registered
// in the catalog, the endpoints the gateway applied and the catalog's,
// the policy key, the control plane's /readyz.

// extStub is a `leaky providers-stub -consul-addr` serving OpenAI only,
// run in the test process.
type extStub struct {
	addr   string
	cancel context.CancelFunc
	done   chan error
}

// startStub runs a stub registered with the agent at consulAddr; the
// caller stops it.
func startStub(t *testing.T, consulAddr string) *extStub {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	st := &extStub{cancel: cancel, done: make(chan error, 1)}
	var out syncBuffer
	go func() {
		st.done <- run(ctx, []string{"providers-stub", "-consul-addr", consulAddr,
			"-openai-addr", "127.0.0.1:0", "-gemini-addr", "", "-qwen-addr", ""}, testEnv(&out, &out, nil))
	}()
	line := regexp.MustCompile(`providers-stub: openai http://(\S+)`)
	for deadline := time.Now().Add(pollBound); st.addr == ""; time.Sleep(20 * time.Millisecond) {
		if m := line.FindStringSubmatch(out.String()); m != nil {
			st.addr = m[1]
		} else if time.Now().After(deadline) {
			cancel()
			t.Fatalf("the stub did not start within %s (run: %v):\n%s", pollBound, <-st.done, out.String())
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
