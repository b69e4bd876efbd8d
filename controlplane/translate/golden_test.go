package translate

import (
	"bytes"
	"encoding/json"
	"flag"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/google/go-cmp/cmp"

	"github.com/leakytokens/leaky/controlplane/model"
	"github.com/leakytokens/leaky/envoy/validate"
	"github.com/leakytokens/leaky/internal/policy"
)

var update = flag.Bool("update", false, "rewrite testdata/out/*.golden and envoy/*.yaml from the translator")

// ep is host:port as a model endpoint.
func ep(t *testing.T, s string) model.Endpoint {
	t.Helper()
	e, err := model.ParseEndpoint(s)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// defaultEndpoints are the services on their default ports (DESIGN §2).
func defaultEndpoints(t *testing.T) map[string][]model.Endpoint {
	return map[string][]model.Endpoint{
		model.ServiceAuthzGRPC:          {ep(t, "127.0.0.1:9091")},
		model.ServiceAuthzHTTP:          {ep(t, "127.0.0.1:8081")},
		model.ServiceRatelimitGRPC:      {ep(t, "127.0.0.1:9092")},
		model.ServiceRatelimitHTTP:      {ep(t, "127.0.0.1:8082")},
		model.ServiceAnalyticsHTTP:      {ep(t, "127.0.0.1:8083")},
		model.ProviderService("qwen"):   {ep(t, "127.0.0.1:8091")},
		model.ProviderService("gemini"): {ep(t, "127.0.0.1:8092")},
		model.ProviderService("openai"): {ep(t, "127.0.0.1:8093")},
	}
}

// exampleModel is the example policy with every service on its default
// port and the listener on 0.0.0.0:8080.
func exampleModel(t *testing.T) *model.Model {
	t.Helper()
	cfg, err := policy.Load("")
	if err != nil {
		t.Fatal(err)
	}
	m := &model.Model{Config: cfg, Endpoints: defaultEndpoints(t), Listener: ep(t, "0.0.0.0:8080")}
	m.Normalize()
	return m
}

// orgModel is testdata/in/org-extra-allow: organisation pools, providers
// beyond the example's (two instances of one, one on IPv6),
// both failure modes allow, an envoyproxy/ratelimit domain beside the
// policy, and no analytics instance (its cluster stays empty).
func orgModel(t *testing.T) *model.Model {
	t.Helper()
	cfg, err := policy.Load(filepath.Join("testdata", "in", "org-extra-allow"))
	if err != nil {
		t.Fatal(err)
	}
	m := &model.Model{
		Config: cfg,
		Endpoints: map[string][]model.Endpoint{
			model.ServiceAuthzGRPC:             {ep(t, "10.0.0.2:9091"), ep(t, "10.0.0.1:9091")},
			model.ServiceAuthzHTTP:             {ep(t, "10.0.0.1:8081")},
			model.ServiceRatelimitGRPC:         {ep(t, "10.0.0.3:9092")},
			model.ServiceRatelimitHTTP:         {ep(t, "10.0.0.3:8082")},
			model.ServiceControlplaneHTTP:      {ep(t, "10.0.0.9:8084")},
			model.ProviderService("openai"):    {ep(t, "10.0.1.1:443")},
			model.ProviderService("mistral"):   {ep(t, "10.0.1.2:8000"), ep(t, "10.0.1.3:8000")},
			model.ProviderService("local-llm"): {ep(t, "[fd00::7]:11434")},
		},
		Listener: ep(t, "127.0.0.1:8080"),
	}
	m.Normalize()
	return m
}

// TestGolden compares every resource of each scenario with
// testdata/out/<scenario>.golden (protojson, keys sorted) and validates it.
func TestGolden(t *testing.T) {
	for name, build := range map[string]func(*testing.T) *model.Model{
		"example":         exampleModel,
		"org-extra-allow": orgModel,
	} {
		t.Run(name, func(t *testing.T) {
			snap, err := Translate(build(t))
			if err != nil {
				t.Fatalf("Translate = %v", err)
			}
			res := map[resourcev3.Type][]types.Resource{}
			for _, typ := range []resourcev3.Type{resourcev3.ListenerType, resourcev3.RouteType, resourcev3.ClusterType,
				resourcev3.EndpointType, resourcev3.RuntimeType, resourcev3.RateLimitConfigType} {
				byName := snap.GetResources(typ)
				for _, n := range slices.Sorted(maps.Keys(byName)) {
					res[typ] = append(res[typ], byName[n])
					if err := validate.Resource(byName[n]); err != nil {
						t.Errorf("validate.Resource(%s %s) = %v", typ, n, err)
					}
				}
			}
			compareGolden(t, filepath.Join("testdata", "out", name+".golden"), render(t, res))
		})
	}
}

// render is the resources as one JSON object: type URL → resources.
func render(t *testing.T, res map[resourcev3.Type][]types.Resource) []byte {
	t.Helper()
	out := map[string][]json.RawMessage{}
	for typ, list := range res {
		out[typ] = []json.RawMessage{}
		for _, r := range list {
			data, err := JSON(r)
			if err != nil {
				t.Fatal(err)
			}
			out[typ] = append(out[typ], data)
		}
	}
	data, err := json.MarshalIndent(out, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := json.Indent(&buf, data, "", "  "); err != nil {
		t.Fatal(err)
	}
	return append(buf.Bytes(), '\n')
}

// compareGolden fails when got differs from the file, or rewrites the file
// with -update.
func compareGolden(t *testing.T, file string, got []byte) {
	t.Helper()
	if *update {
		if err := os.WriteFile(file, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(file)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs from the translator's output; review the change and rerun with -update:\n%s", file, cmp.Diff(string(want), string(got)))
	}
}
