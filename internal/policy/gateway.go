package policy

import (
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strings"
	"time"
)

// Gateway is the policy's optional gateway section: how the gateway (Envoy,
// or the stand-in) calls authz and ratelimit and reaches the providers. The
// control plane's translator turns it into the listener, route and cluster
// settings; the services themselves ignore it. Parse fills every field the
// file leaves out with DefaultGateway's value, so a parsed Policy's Gateway
// is complete.
type Gateway struct {
	// AuthzFailureMode is what the gateway does when authz errs or misses
	// AuthzTimeout: FailDeny answers 503, FailAllow lets the request
	// through unauthenticated (ext_authz failure_mode_allow).
	AuthzFailureMode FailureMode `yaml:"authz_failure_mode"`
	// RatelimitFailureMode is the same for the ratelimit call: FailDeny
	// answers 503 (failure_mode_deny), FailAllow lets the request through
	// unmetered.
	RatelimitFailureMode FailureMode `yaml:"ratelimit_failure_mode"`
	// MaxRequestBytes is how much of a request body the gateway buffers and
	// sends to authz, in bytes (ext_authz with_request_body). A longer body
	// is sent cut, marked partial.
	MaxRequestBytes uint32 `yaml:"max_request_bytes"`
	// AuthzTimeout bounds the ext_authz call; keep it above authz's own
	// deadline (150 ms) or authz's answers are lost to the failure mode.
	AuthzTimeout Duration `yaml:"authz_timeout"`
	// RatelimitTimeout bounds the rate-limit call.
	RatelimitTimeout Duration `yaml:"ratelimit_timeout"`
	// ConnectTimeout bounds a connection to any upstream.
	ConnectTimeout Duration `yaml:"connect_timeout"`
	// UpstreamTimeout bounds a whole provider call (and the token API's),
	// streamed response included.
	UpstreamTimeout Duration `yaml:"upstream_timeout"`
	// Retries is how often a provider call is retried after a 5xx, a reset
	// or a failed connection; a 429 is never retried. 0 disables retries.
	Retries int `yaml:"retries"`
	// ProviderPaths is, per provider, the upstream path prefix its /P/
	// routes rewrite to (qwen: /compatible-mode/). A provider without an
	// entry is rewritten to "/". See ProviderPath.
	ProviderPaths map[string]string `yaml:"provider_paths"`
	// MeteringFailureMode is what the gateway does when the metering
	// processor (ext_proc) errs or misses MeteringTimeout: FailAllow carries
	// on without it for the rest of the request (the reservation then
	// expires at its estimate), FailDeny answers 500 or resets the stream
	// (ext_proc failure_mode_allow).
	MeteringFailureMode FailureMode `yaml:"metering_failure_mode"`
	// MeteringTimeout bounds the wait for each of the processor's answers
	// (ext_proc message_timeout), not the whole request. The default, 1s,
	// is above Envoy's 200ms: a processor that answers in microseconds
	// but sits on a loaded host should not let requests go unmetered.
	MeteringTimeout Duration `yaml:"metering_timeout"`
}

// Bounds of the gateway section.
const (
	MinMaxRequestBytes = 1 << 10 // 1 KiB
	MaxMaxRequestBytes = 8 << 20 // 8 MiB
	MaxRetries         = 10
)

// DefaultGateway is the gateway section of a policy that has none; each
// field the section leaves out keeps its value here.
func DefaultGateway() Gateway {
	return Gateway{
		AuthzFailureMode:     FailDeny,
		RatelimitFailureMode: FailDeny,
		MaxRequestBytes:      1 << 20,
		AuthzTimeout:         Duration(250 * time.Millisecond),
		RatelimitTimeout:     Duration(20 * time.Millisecond),
		ConnectTimeout:       Duration(time.Second),
		UpstreamTimeout:      Duration(120 * time.Second),
		Retries:              2,
		MeteringFailureMode:  FailAllow,
		MeteringTimeout:      Duration(time.Second),
	}
}

// ProviderPath is the upstream path prefix provider p's /p/ routes rewrite
// to: its provider_paths entry, else "/". It always begins and ends with "/".
func (g Gateway) ProviderPath(p string) string {
	if path, ok := g.ProviderPaths[p]; ok {
		return path
	}
	return "/"
}

// upstreamPath is what a provider_paths entry may be: "/" or
// "/segment/…/segment/" of plain path characters, so that appending the
// rest of the request path after the rewritten prefix gives a valid path.
var upstreamPath = regexp.MustCompile(`^/(?:[A-Za-z0-9._~!$&'()*+,;=:@-]+/)*$`)

// durationBound is the range one of the gateway's durations must lie in.
type durationBound struct {
	field    string
	value    Duration
	min, max time.Duration
}

// validate checks the gateway section; providers are the policy's
// provider pools (provider_paths may name only those).
func (g Gateway) validate(providers map[string]Bucket) []error {
	var errs []error
	for _, m := range []struct {
		field string
		mode  FailureMode
	}{{"gateway.authz_failure_mode", g.AuthzFailureMode}, {"gateway.ratelimit_failure_mode", g.RatelimitFailureMode},
		{"gateway.metering_failure_mode", g.MeteringFailureMode},
	} {
		if m.mode != FailAllow && m.mode != FailDeny {
			errs = append(errs, fmt.Errorf("%s %q: must be deny or allow", m.field, m.mode))
		}
	}
	if g.MaxRequestBytes < MinMaxRequestBytes || g.MaxRequestBytes > MaxMaxRequestBytes {
		errs = append(errs, fmt.Errorf("gateway.max_request_bytes %d: must be %d (1 KiB) to %d (8 MiB)", g.MaxRequestBytes, MinMaxRequestBytes, MaxMaxRequestBytes))
	}
	for _, d := range []durationBound{
		{"gateway.authz_timeout", g.AuthzTimeout, time.Millisecond, time.Minute},
		{"gateway.ratelimit_timeout", g.RatelimitTimeout, time.Millisecond, 10 * time.Second},
		{"gateway.connect_timeout", g.ConnectTimeout, time.Millisecond, time.Minute},
		{"gateway.upstream_timeout", g.UpstreamTimeout, time.Second, time.Hour},
		{"gateway.metering_timeout", g.MeteringTimeout, time.Millisecond, 10 * time.Second},
	} {
		if v := time.Duration(d.value); v < d.min || v > d.max {
			errs = append(errs, fmt.Errorf("%s %s: must be %s to %s", d.field, v, d.min, d.max))
		}
	}
	if g.Retries < 0 || g.Retries > MaxRetries {
		errs = append(errs, fmt.Errorf("gateway.retries %d: must be 0 to %d", g.Retries, MaxRetries))
	}
	for _, p := range slices.Sorted(maps.Keys(g.ProviderPaths)) {
		field := "gateway.provider_paths." + quoteIfOdd(p)
		if _, ok := providers[p]; !ok || p == Wildcard {
			errs = append(errs, fmt.Errorf("%s: provider %q is not listed under providers, so no route of the gateway would use this path", field, p))
		}
		if path := g.ProviderPaths[p]; !upstreamPath.MatchString(path) || hasDotSegment(path) {
			errs = append(errs, fmt.Errorf("%s %q: must be \"/\" or a path that begins and ends with \"/\", of letters, digits and -._~!$&'()*+,;=:@ without empty, \".\" or \"..\" segments", field, path))
		}
	}
	return errs
}

// hasDotSegment says whether path has a "." or ".." segment.
func hasDotSegment(path string) bool {
	for _, seg := range strings.Split(path, "/") {
		if seg == "." || seg == ".." {
			return true
		}
	}
	return false
}
