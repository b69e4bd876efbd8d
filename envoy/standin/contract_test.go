package standin

import (
	"context"
	"net/http"
	"testing"

	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/leakytokens/leaky/controlplane/model"
	"github.com/leakytokens/leaky/controlplane/translate"
	"github.com/leakytokens/leaky/internal/policy"
)

// TestStandinExecutesTheTranslatorsSnapshot is the real contract: the
// snapshot the control plane's translator makes of the example policy is
// ACKed whole (every type, no NACK), applied, and carries a request through
// ext_authz, ratelimit and ext_proc to the provider.
func TestStandinExecutesTheTranslatorsSnapshot(t *testing.T) {
	h := newHarness(t, defaultFixture())
	provider := newRecorder(t)
	cfg, err := policy.Load("")
	if err != nil {
		t.Fatal(err)
	}
	endpoint := func(hp string) []model.Endpoint {
		e, err := model.ParseEndpoint(hp)
		if err != nil {
			t.Fatal(err)
		}
		return []model.Endpoint{e}
	}
	m := &model.Model{
		Config: cfg,
		Endpoints: map[string][]model.Endpoint{
			model.ServiceAuthzGRPC:     endpoint(h.authz.addr),
			model.ServiceRatelimitGRPC: endpoint(h.rls.addr),
			model.ServiceAuthzHTTP:     endpoint(provider.addr()),
		},
		Listener: endpoint("127.0.0.1:8080")[0],
	}
	for name := range cfg.Policy().Providers {
		m.Endpoints[model.ProviderService(name)] = endpoint(provider.addr())
	}
	m.Normalize()
	snap, err := translate.Translate(m)
	if err != nil {
		t.Fatal(err)
	}
	if err := h.xds.cache.SetSnapshot(context.Background(), testNode, snap); err != nil {
		t.Fatal(err)
	}
	version := snap.GetVersion(resourcev3.ListenerType)
	h.waitFor("the translator's snapshot applied", func() bool {
		for _, kind := range []string{"listener", "route", "cluster", "endpoint"} {
			if h.appliedVersion(kind) != version {
				return false
			}
		}
		return true
	})
	for _, typ := range []string{resourcev3.ListenerType, resourcev3.RouteType, resourcev3.ClusterType, resourcev3.EndpointType} {
		for _, n := range h.xds.nacks(typ) {
			t.Errorf("NACK of %s: %s", typ, n.GetErrorDetail().GetMessage())
		}
	}
	// The example policy gives the ratelimit call 20 ms, which a loaded
	// machine may miss (its failure mode is deny: 503): poll for a 200.
	h.waitFor("a completion through the translated configuration", func() bool {
		resp, _ := h.do("POST", "/openai/v1/chat/completions", http.Header{"Content-Type": {"application/json"}}, `{"model":"gpt-4o"}`)
		return resp.StatusCode == http.StatusOK
	})
	got := provider.requests()
	if last := got[len(got)-1]; last.uri != "/v1/chat/completions" || last.header.Get("X-Leaky-User-Id") != "u1" {
		t.Errorf("the provider got %s with user %q, want /v1/chat/completions from u1", last.uri, last.header.Get("X-Leaky-User-Id"))
	}
	if len(h.rls.requests()) == 0 {
		t.Error("no ShouldRateLimit call")
	}
	// Completions are metered: an ext_proc stream runs to its end (the
	// example's 200 ms message_timeout may be missed on a loaded machine,
	// its failure mode is allow: poll with more completions).
	h.waitFor("a finished ext_proc stream", func() bool {
		for _, s := range h.proc.snapshot() {
			if s.ended == "eof" && len(s.got) >= 4 {
				return true
			}
		}
		h.do("POST", "/openai/v1/chat/completions", http.Header{"Content-Type": {"application/json"}}, `{"model":"gpt-4o"}`)
		return false
	})
	// Its local_reply_config: the gateway's own replies are JSON, authz's
	// denials reach the client as sent.
	if resp, body := h.rawGet("/nowhere"); resp.StatusCode != 404 || body != `{"error":"route_not_found","message":"","status":404}`+"\n" {
		t.Errorf("no route: %d %q, want 404 with the JSON envelope", resp.StatusCode, body)
	}
	h.authz.setAnswer(failing)
	if resp, body := h.do("GET", "/openai/v1/models", nil, ""); resp.StatusCode != 503 || body != `{"error":"ext_authz_error","message":"","status":503}`+"\n" {
		t.Errorf("ext_authz failure: %d %q, want 503 with the JSON envelope", resp.StatusCode, body)
	}
	h.authz.setAnswer(denyWith(typev3.StatusCode_Forbidden, `{"error":"forbidden_org"}`, setHeader("content-type", "application/json")))
	if resp, body := h.do("GET", "/openai/v1/models", nil, ""); resp.StatusCode != 403 || body != `{"error":"forbidden_org"}` ||
		resp.Header.Get("Content-Type") != "application/json" {
		t.Errorf("authz's denial: %d %q %q, want it as sent", resp.StatusCode, resp.Header.Get("Content-Type"), body)
	}
}
