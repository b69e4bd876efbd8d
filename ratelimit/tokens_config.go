package ratelimit

import (
	"errors"
	"flag"
	"fmt"
	"net/netip"
	"net/url"
	"sort"
	"strings"
	"time"
)

// TokensConfig configures the token API (/api/v1/tokens/*): who may call
// it, where the providers are, and the purchase saga's recovery.
type TokensConfig struct {
	// JWKSURL, Issuer and Audience verify a caller's bearer token against
	// the key set authz publishes.
	JWKSURL  string
	Issuer   string
	Audience string
	// TrustedProxies lists the CIDRs whose x-leaky-* headers (set by authz
	// behind the gateway) are believed; empty: none, every caller needs a
	// token.
	TrustedProxies string
	// ProviderURLs maps a provider to its base URL; the provider's seed
	// API is POST {base}/api/v1/{provider}/chat. Only these providers may
	// be consumed from.
	ProviderURLs map[string]string
	// ProviderTimeout bounds one call to a provider (one attempt).
	ProviderTimeout time.Duration
	// ProviderConcurrency bounds the calls in flight to one provider (the
	// bulkhead); beyond it a consume is refused with 503 at once.
	ProviderConcurrency int
	// SagaSimulateFailure fails every purchase after PAYMENT_RESERVED (and
	// compensates), as the seed's token.saga.simulate-failure did.
	SagaSimulateFailure bool
	// SagaRecoveryInterval is how often the recovery job looks for sagas
	// left between steps; SagaStaleAfter is how long a saga must have been
	// untouched before recovery takes it over.
	SagaRecoveryInterval time.Duration
	SagaStaleAfter       time.Duration
}

// DefaultTokensConfig returns the defaults: authz and the provider stubs
// on their ports of DESIGN §2 on loopback, no trusted proxy.
func DefaultTokensConfig() TokensConfig {
	return TokensConfig{
		JWKSURL:  "http://127.0.0.1:8081/.well-known/jwks.json",
		Issuer:   "leaky-tokens-auth",
		Audience: "leaky-tokens",
		ProviderURLs: map[string]string{
			"openai": "http://127.0.0.1:8093",
			"gemini": "http://127.0.0.1:8092",
			"qwen":   "http://127.0.0.1:8091",
		},
		ProviderTimeout:      30 * time.Second,
		ProviderConcurrency:  64,
		SagaRecoveryInterval: 30 * time.Second,
		SagaStaleAfter:       time.Minute,
	}
}

// RegisterFlags adds the token API's flags to fs.
func (c *TokensConfig) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.JWKSURL, "authz-jwks-url", c.JWKSURL, "authz's published key set, which verifies the token API's bearer tokens")
	fs.StringVar(&c.Issuer, "jwt-issuer", c.Issuer, "the iss the token API's bearer tokens must carry")
	fs.StringVar(&c.Audience, "jwt-audience", c.Audience, "the aud the token API's bearer tokens must carry")
	fs.StringVar(&c.TrustedProxies, "trusted-proxies", c.TrustedProxies, "comma-separated CIDRs whose x-leaky-* identity headers the token API believes (the gateway); empty: none")
	fs.Var((*providerURLs)(&c.ProviderURLs), "provider-urls", "provider=base URL pairs, comma-separated (openai=http://127.0.0.1:8093,…): the providers the token API calls")
	fs.DurationVar(&c.ProviderTimeout, "provider-timeout", c.ProviderTimeout, "deadline of one call to a provider")
	fs.IntVar(&c.ProviderConcurrency, "provider-concurrency", c.ProviderConcurrency, "calls in flight to one provider before consumes are refused (503)")
	fs.BoolVar(&c.SagaSimulateFailure, "saga-simulate-failure", c.SagaSimulateFailure, "fail every purchase after the payment step and compensate (tests, demos)")
	fs.DurationVar(&c.SagaRecoveryInterval, "saga-recovery-interval", c.SagaRecoveryInterval, "how often purchases left between steps are finished or compensated")
	fs.DurationVar(&c.SagaStaleAfter, "saga-stale-after", c.SagaStaleAfter, "how long a purchase must be untouched before recovery takes it over")
}

// Validate reports every problem with c.
func (c TokensConfig) Validate() error {
	var errs []error
	if u, err := url.Parse(c.JWKSURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		errs = append(errs, fmt.Errorf("authz-jwks-url %q: must be an http(s) URL", c.JWKSURL))
	}
	if _, err := parseCIDRs(c.TrustedProxies); err != nil {
		errs = append(errs, fmt.Errorf("trusted-proxies: %w", err))
	}
	for name, base := range c.ProviderURLs {
		if !validProvider(name) {
			errs = append(errs, fmt.Errorf("provider-urls: provider %q: 1 to 32 lower-case letters, digits, '-' or '_'", name))
		}
		if u, err := url.Parse(base); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			errs = append(errs, fmt.Errorf("provider-urls: %s=%q: must be an http(s) URL", name, base))
		}
	}
	if c.ProviderTimeout <= 0 {
		errs = append(errs, errors.New("provider-timeout: must be positive"))
	}
	if c.ProviderConcurrency < 1 {
		errs = append(errs, errors.New("provider-concurrency: must be at least 1"))
	}
	if c.SagaRecoveryInterval <= 0 || c.SagaStaleAfter <= 0 {
		errs = append(errs, errors.New("saga-recovery-interval, saga-stale-after: must be positive"))
	}
	return errors.Join(errs...)
}

// parseCIDRs parses a comma-separated CIDR list ("" = none).
func parseCIDRs(s string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for f := range strings.SplitSeq(s, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		p, err := netip.ParsePrefix(f)
		if err != nil {
			return nil, fmt.Errorf("%q: not a CIDR", f)
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

// validProvider reports whether name can be a provider's name (and so a
// path segment of its URL).
func validProvider(name string) bool {
	if name == "" || len(name) > 32 {
		return false
	}
	for _, r := range name {
		if (r < 'a' || r > 'z') && (r < '0' || r > '9') && r != '-' && r != '_' {
			return false
		}
	}
	return true
}

// providerURLs is the -provider-urls flag: name=url pairs; setting it
// replaces the defaults.
type providerURLs map[string]string

func (p *providerURLs) String() string {
	if p == nil {
		return ""
	}
	pairs := make([]string, 0, len(*p))
	for k, v := range *p {
		pairs = append(pairs, k+"="+v)
	}
	sort.Strings(pairs)
	return strings.Join(pairs, ",")
}

func (p *providerURLs) Set(s string) error {
	m := map[string]string{}
	for f := range strings.SplitSeq(s, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		name, base, ok := strings.Cut(f, "=")
		if !ok || name == "" || base == "" {
			return fmt.Errorf("%q: want provider=URL", f)
		}
		m[strings.TrimSpace(name)] = strings.TrimRight(strings.TrimSpace(base), "/")
	}
	*p = m
	return nil
}
