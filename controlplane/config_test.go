package controlplane

import (
	"flag"
	"io"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/leakytokens/leaky/controlplane/model"
	"github.com/leakytokens/leaky/internal/flagenv"
)

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name    string
		mutate  func(*Config)
		wantErr string // "" means valid
	}{
		{"defaults", func(*Config) {}, ""},
		{"bad xds address", func(c *Config) { c.XDSAddr = "18000" }, "xds-addr"},
		{"listener without port", func(c *Config) { c.Listener = "0.0.0.0" }, "listener"},
		{"listener port 0: set later", func(c *Config) { c.Listener = "0.0.0.0:0" }, ""},
		{"zero poll", func(c *Config) { c.PolicyPoll = 0 }, "policy-poll"},
		{"consul without a key", func(c *Config) { c.ConsulAddr, c.ConsulPolicyKey = "127.0.0.1:8500", "" }, "consul-policy-key"},
		{"bad service name", func(c *Config) { c.Endpoints = map[string][]string{"Leaky Authz": {"127.0.0.1:1"}} }, "not a service name"},
		{"bad endpoint", func(c *Config) { c.Endpoints = map[string][]string{"leaky-authz-grpc": {"127.0.0.1:99999"}} }, "endpoint leaky-authz-grpc"},
		{"jwks not http", func(c *Config) { c.JWKSURL = "file:///etc/jwks" }, "authz-jwks-url"},
		{"no audience", func(c *Config) { c.Audience = "" }, "audience"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := DefaultConfig()
			tt.mutate(&c)
			err := c.Validate()
			if tt.wantErr == "" && err != nil || tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Errorf("Validate() = %v, want %q", err, tt.wantErr)
			}
		})
	}
}

// -endpoint is repeatable and comma-separated, from the flags and the
// environment; it pins services over the defaults, and with Consul only
// the pinned ones are static.
func TestEndpointFlags(t *testing.T) {
	c := DefaultConfig()
	fs := flag.NewFlagSet("controlplane", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	c.RegisterFlags(fs)
	env := map[string]string{"LEAKY_ENDPOINT": "leaky-provider-openai=10.0.0.1:443, leaky-provider-openai=10.0.0.2:443"}
	err := flagenv.Parse(fs, []string{"-endpoint", "leaky-authz-grpc=10.0.0.3:9091", "-endpoint", "leaky-provider-mistral=10.0.0.4:80"},
		func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	e := func(h string, p uint32) model.Endpoint { return model.Endpoint{Host: h, Port: p} }
	want := map[string][]model.Endpoint{
		model.ServiceAuthzGRPC:           {e("10.0.0.3", 9091)},
		model.ServiceAuthzHTTP:           {e("127.0.0.1", 8081)},
		model.ServiceRatelimitGRPC:       {e("127.0.0.1", 9092)},
		model.ServiceRatelimitHTTP:       {e("127.0.0.1", 8082)},
		model.ServiceAnalyticsHTTP:       {e("127.0.0.1", 8083)},
		model.ProviderService("qwen"):    {e("127.0.0.1", 8091)},
		model.ProviderService("gemini"):  {e("127.0.0.1", 8092)},
		model.ProviderService("openai"):  {e("10.0.0.1", 443), e("10.0.0.2", 443)},
		model.ProviderService("mistral"): {e("10.0.0.4", 80)},
	}
	if diff := cmp.Diff(want, c.staticEndpoints()); diff != "" {
		t.Errorf("static endpoints without Consul (-want +got):\n%s", diff)
	}
	c.ConsulAddr = "127.0.0.1:8500"
	want = map[string][]model.Endpoint{
		model.ServiceAuthzGRPC:           {e("10.0.0.3", 9091)},
		model.ProviderService("openai"):  {e("10.0.0.1", 443), e("10.0.0.2", 443)},
		model.ProviderService("mistral"): {e("10.0.0.4", 80)},
	}
	if diff := cmp.Diff(want, c.staticEndpoints()); diff != "" {
		t.Errorf("static endpoints with Consul (-want +got):\n%s", diff)
	}
	if err := fs.Set("endpoint", "no-equals-sign"); err == nil {
		t.Error(`-endpoint no-equals-sign: want an error`)
	}
}
