package model

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/leakytokens/leaky/internal/policy"
)

func TestParseEndpoint(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want Endpoint
		ok   bool
	}{
		{"127.0.0.1:8080", Endpoint{"127.0.0.1", 8080}, true},
		{"[::1]:9091", Endpoint{"::1", 9091}, true},
		{"authz.internal:9091", Endpoint{"authz.internal", 9091}, true},
		{"127.0.0.1:0", Endpoint{}, false},
		{"127.0.0.1:65536", Endpoint{}, false},
		{":8080", Endpoint{}, false},
		{"127.0.0.1", Endpoint{}, false},
		{"127.0.0.1:http", Endpoint{}, false},
	} {
		got, err := ParseEndpoint(tt.in)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("ParseEndpoint(%q) = %v, %v; want %v, ok %v", tt.in, got, err, tt.want, tt.ok)
		}
		if tt.ok && got.String() != tt.in {
			t.Errorf("%q round-trips as %q", tt.in, got.String())
		}
	}
}

func example(t *testing.T) *policy.Snapshot {
	t.Helper()
	snap, err := policy.Load("")
	if err != nil {
		t.Fatal(err)
	}
	return snap
}

// complete is a model of the example policy with every required service.
func complete(t *testing.T) *Model {
	m := &Model{Config: example(t), Endpoints: map[string][]Endpoint{}, Listener: Endpoint{"0.0.0.0", 8080}}
	for i, s := range Required(m.Config.Policy()) {
		m.Endpoints[s] = []Endpoint{{"127.0.0.1", uint32(20000 + i)}}
	}
	return m
}

func TestRequiredNamesEveryProvider(t *testing.T) {
	want := []string{ServiceAuthzGRPC, ServiceAuthzHTTP, ServiceRatelimitGRPC,
		ProviderService("gemini"), ProviderService("openai"), ProviderService("qwen")}
	slices.Sort(want)
	if diff := cmp.Diff(want, Required(example(t).Policy())); diff != "" {
		t.Errorf("Required (-want +got):\n%s", diff)
	}
}

func TestNormalizeSortsDeduplicatesAndDropsEmpty(t *testing.T) {
	m := &Model{Endpoints: map[string][]Endpoint{
		"a": {{"10.0.0.2", 80}, {"10.0.0.1", 81}, {"10.0.0.1", 80}, {"10.0.0.2", 80}},
		"b": {},
	}}
	m.Normalize()
	want := map[string][]Endpoint{"a": {{"10.0.0.1", 80}, {"10.0.0.1", 81}, {"10.0.0.2", 80}}}
	if diff := cmp.Diff(want, m.Endpoints); diff != "" {
		t.Errorf("Normalize (-want +got):\n%s", diff)
	}
}

func TestValidate(t *testing.T) {
	if err := complete(t).Validate(); err != nil {
		t.Fatalf("a complete model: %v", err)
	}
	for _, tt := range []struct {
		name  string
		edit  func(*Model)
		want  string
		noEPs bool
	}{
		{"no policy", func(m *Model) { m.Config = nil }, "no leaky-tokens policy", false},
		{"a provider without endpoints", func(m *Model) { delete(m.Endpoints, ProviderService("qwen")) }, "service leaky-provider-qwen: no healthy endpoint", true},
		{"authz without endpoints", func(m *Model) { m.Endpoints[ServiceAuthzGRPC] = nil }, "service leaky-authz-grpc", true},
		{"an endpoint without a port", func(m *Model) { m.Endpoints["x"] = []Endpoint{{"10.0.0.1", 0}} }, `service x: endpoint "10.0.0.1:0"`, false},
		{"no listener port", func(m *Model) { m.Listener.Port = 0 }, "listener has no port", false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			m := complete(t)
			tt.edit(m)
			err := m.Validate()
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Validate = %v, want an error with %q", err, tt.want)
			}
			if errors.Is(err, ErrNoEndpoints) != tt.noEPs {
				t.Errorf("errors.Is(err, ErrNoEndpoints) = %v, want %v", !tt.noEPs, tt.noEPs)
			}
		})
	}
}
