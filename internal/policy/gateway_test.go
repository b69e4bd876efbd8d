package policy

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// gatewayBase is a minimal valid policy the gateway tests add a section to.
const gatewayBase = "tiers: {a: {}}\ndefault_tier: a\nproviders: {openai: {capacity: 1, leak_rate: 1}, qwen: {capacity: 1, leak_rate: 1}}\n"

func TestGatewayDefaults(t *testing.T) {
	tests := []struct {
		name    string
		section string
		want    func(*Gateway)
	}{
		{"no section", "", func(*Gateway) {}},
		{"null section", "gateway: ~\n", func(*Gateway) {}},
		{"empty section", "gateway: {}\n", func(*Gateway) {}},
		{"one field keeps the others", "gateway: {authz_failure_mode: allow}\n", func(g *Gateway) { g.AuthzFailureMode = FailAllow }},
		{"retries zero is kept", "gateway: {retries: 0}\n", func(g *Gateway) { g.Retries = 0 }},
		{"metering alone", "gateway: {metering_failure_mode: deny, metering_timeout: 1ms}\n", func(g *Gateway) {
			g.MeteringFailureMode, g.MeteringTimeout = FailDeny, Duration(time.Millisecond)
		}},
		{"every field", "gateway:\n  authz_failure_mode: allow\n  ratelimit_failure_mode: allow\n  max_request_bytes: 1024\n  authz_timeout: 1s\n  ratelimit_timeout: 5ms\n  connect_timeout: 2s\n  upstream_timeout: 1h\n  retries: 10\n  provider_paths: {qwen: /compatible-mode/, openai: /}\n  metering_failure_mode: deny\n  metering_timeout: 10s\n",
			func(g *Gateway) {
				*g = Gateway{AuthzFailureMode: FailAllow, RatelimitFailureMode: FailAllow, MaxRequestBytes: 1024,
					AuthzTimeout: Duration(time.Second), RatelimitTimeout: Duration(5 * time.Millisecond), ConnectTimeout: Duration(2 * time.Second),
					UpstreamTimeout: Duration(time.Hour), Retries: 10, ProviderPaths: map[string]string{"qwen": "/compatible-mode/", "openai": "/"},
					MeteringFailureMode: FailDeny, MeteringTimeout: Duration(10 * time.Second)}
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := Parse("p.yaml", []byte(gatewayBase+tt.section))
			if err != nil {
				t.Fatalf("Parse = %v", err)
			}
			want := DefaultGateway()
			tt.want(&want)
			if diff := cmp.Diff(want, p.Gateway); diff != "" {
				t.Errorf("Gateway (-want +got):\n%s", diff)
			}
		})
	}
}

func TestGatewayOfTheExample(t *testing.T) {
	p, err := Parse("example.yaml", Example())
	if err != nil {
		t.Fatal(err)
	}
	want := DefaultGateway()
	want.ProviderPaths = map[string]string{"qwen": "/compatible-mode/"}
	if diff := cmp.Diff(want, p.Gateway); diff != "" {
		t.Errorf("example's gateway (-want +got):\n%s", diff)
	}
	for prov, path := range map[string]string{"qwen": "/compatible-mode/", "openai": "/", "gemini": "/"} {
		if got := p.Gateway.ProviderPath(prov); got != path {
			t.Errorf("ProviderPath(%s) = %q, want %q", prov, got, path)
		}
	}
}

func TestGatewayErrors(t *testing.T) {
	tests := []struct{ name, section, want string }{
		{"unknown field", "gateway: {colour: blue}\n", "colour"},
		{"authz failure mode error", "gateway: {authz_failure_mode: error}\n", `gateway.authz_failure_mode "error": must be deny or allow`},
		{"ratelimit failure mode in capitals", "gateway: {ratelimit_failure_mode: Deny}\n", `gateway.ratelimit_failure_mode "Deny"`},
		{"body bound too small", "gateway: {max_request_bytes: 1023}\n", "gateway.max_request_bytes 1023: must be 1024 (1 KiB) to 8388608 (8 MiB)"},
		{"body bound too large", "gateway: {max_request_bytes: 8388609}\n", "gateway.max_request_bytes 8388609"},
		{"negative body bound", "gateway: {max_request_bytes: -1}\n", "cannot unmarshal"},
		{"zero authz timeout", "gateway: {authz_timeout: 0s}\n", "gateway.authz_timeout 0s: must be 1ms to 1m0s"},
		{"negative ratelimit timeout", "gateway: {ratelimit_timeout: -20ms}\n", "gateway.ratelimit_timeout -20ms"},
		{"ratelimit timeout too long", "gateway: {ratelimit_timeout: 11s}\n", "gateway.ratelimit_timeout 11s: must be 1ms to 10s"},
		{"connect timeout not a duration", "gateway: {connect_timeout: soon}\n", "soon"},
		{"upstream timeout below a second", "gateway: {upstream_timeout: 500ms}\n", "gateway.upstream_timeout 500ms: must be 1s to 1h0m0s"},
		{"metering failure mode unknown", "gateway: {metering_failure_mode: ignore}\n", `gateway.metering_failure_mode "ignore": must be deny or allow`},
		{"metering failure mode empty", "gateway: {metering_failure_mode: \"\"}\n", `gateway.metering_failure_mode "": must be deny or allow`},
		{"zero metering timeout", "gateway: {metering_timeout: 0s}\n", "gateway.metering_timeout 0s: must be 1ms to 10s"},
		{"metering timeout below a millisecond", "gateway: {metering_timeout: 999us}\n", "gateway.metering_timeout 999µs: must be 1ms to 10s"},
		{"metering timeout too long", "gateway: {metering_timeout: 10001ms}\n", "gateway.metering_timeout 10.001s: must be 1ms to 10s"},
		{"metering timeout not a duration", "gateway: {metering_timeout: 200}\n", "200"},
		{"negative retries", "gateway: {retries: -1}\n", "gateway.retries -1: must be 0 to 10"},
		{"too many retries", "gateway: {retries: 11}\n", "gateway.retries 11"},
		{"path for an unlisted provider", "gateway: {provider_paths: {gemini: /v1beta/}}\n", `gateway.provider_paths.gemini: provider "gemini" is not listed under providers`},
		{"path for the wildcard", "gateway: {provider_paths: {\"*\": /}}\n", `gateway.provider_paths.*: provider "*" is not listed`},
		{"path without a leading slash", "gateway: {provider_paths: {qwen: compatible-mode/}}\n", `gateway.provider_paths.qwen "compatible-mode/": must be`},
		{"path without a trailing slash", "gateway: {provider_paths: {qwen: /compatible-mode}}\n", `gateway.provider_paths.qwen "/compatible-mode"`},
		{"empty path", "gateway: {provider_paths: {qwen: \"\"}}\n", `gateway.provider_paths.qwen ""`},
		{"empty segment", "gateway: {provider_paths: {qwen: /a//b/}}\n", `gateway.provider_paths.qwen "/a//b/"`},
		{"dot-dot segment", "gateway: {provider_paths: {qwen: /a/../}}\n", `gateway.provider_paths.qwen "/a/../"`},
		{"query in the path", "gateway: {provider_paths: {qwen: \"/a?b=1/\"}}\n", `gateway.provider_paths.qwen "/a?b=1/"`},
		{"space in the path", "gateway: {provider_paths: {qwen: \"/a b/\"}}\n", `gateway.provider_paths.qwen "/a b/"`},
		{"percent in the path", "gateway: {provider_paths: {qwen: /a%2F/}}\n", `gateway.provider_paths.qwen "/a%2F/"`},
		{"section not a mapping", "gateway: [1]\n", "cannot unmarshal"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("p.yaml", []byte(gatewayBase+tt.section))
			if err == nil || !strings.HasPrefix(err.Error(), "p.yaml: ") || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Parse = %v, want an error naming p.yaml and %q", err, tt.want)
			}
		})
	}
}

// Every problem of the section is reported at once.
func TestGatewayReportsEveryProblem(t *testing.T) {
	_, err := Parse("p.yaml", []byte(gatewayBase+"gateway: {retries: 99, authz_failure_mode: maybe, connect_timeout: 0s}\n"))
	for _, want := range []string{"gateway.retries", "gateway.authz_failure_mode", "gateway.connect_timeout"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Parse = %v, want it to name %s", err, want)
		}
	}
}
