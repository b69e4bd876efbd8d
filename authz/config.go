package authz

import (
	"errors"
	"flag"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/leakytokens/leaky/internal/flagenv"
	"github.com/leakytokens/leaky/internal/serve"
	"github.com/leakytokens/leaky/internal/xdsconfig"
)

// Config is the whole configuration of the service. Every field is a flag
// with an environment variable (flag -grpc-addr reads LEAKY_GRPC_ADDR).
type Config struct {
	// Config bounds the runtime: streams, connections, idle and keep-alive
	// times, readiness, shutdown (flags shared by every service).
	serve.Config

	GRPCAddr string // ext_authz Check and gRPC health; port 0 picks one
	HTTPAddr string // REST API, OAuth2, JWKS, /livez, /readyz, /metrics
	// PublicURL is the base URL clients reach the HTTP API at (scheme, host
	// and any path prefix), used in the discovery metadata; empty means
	// http://<bound HTTP address>. Request headers never decide it.
	PublicURL string
	// DatabaseURL is the PostgreSQL DSN; empty selects the memory store.
	// cmd/leaky opens the store it names and hands it to New, which never
	// dials.
	DatabaseURL string
	// PolicyPath is the policy file, or a directory holding it among
	// envoyproxy/ratelimit domain files (read by internal/policy's loader,
	// as the ratelimit service reads it). Empty selects the embedded
	// example. Changes are picked up within a second.
	PolicyPath string
	// ConfigXDS is the host:port of the control plane's ADS server. When
	// set, the service starts on PolicyPath as usual but does not watch it:
	// the policy comes from the Runtime resource the control plane pushes
	// (package xdsconfig), applied as it arrives.
	ConfigXDS string

	// SigningSecret seals the signing keys at rest and keys the refresh
	// token HMAC. Required with a database; with the memory store an empty
	// secret is replaced by a random one (tokens then die with the process).
	SigningSecret string
	Issuer        string        // iss of every token
	Audience      string        // aud of every token, and the one Check requires
	TokenTTL      time.Duration // access token lifetime
	RefreshTTL    time.Duration // refresh token lifetime
	KeyRotation   time.Duration // a new signing key is made when the newest is this old
	KeyRefresh    time.Duration // how often the key set is reloaded from the store

	APIKeyCacheTTL  time.Duration // verified API keys are trusted this long; a revoked key works at most this long elsewhere
	APIKeyCacheSize int           // entries
	CheckTimeout    time.Duration // deadline of every store call made by Check (Envoy waits 200 ms)
	// StoreFailure is Check's answer when the store fails or is too slow:
	// "deny" (a 503 JSON answer) or "error" (gRPC UNAVAILABLE; Envoy's
	// failure_mode_allow and status_on_error then decide).
	StoreFailure string

	PublicPaths []string // path prefixes Check lets through without credentials
	AdminPaths  []string // path prefixes Check allows only to role ADMIN

	AdminUsername string // bootstrap admin, created at start if missing
	AdminPassword string // empty: generated and printed once
	AdminEmail    string

	DefaultMaxTokens int64 // completion tokens assumed when a body names no limit
	Argon2MemoryKiB  int   // argon2id memory cost of new password hashes
	Argon2Time       int   // argon2id passes
	// PasswordHashers is how many password hashes (registration, login)
	// run at once; 0 means one fewer than GOMAXPROCS (at least 1), so
	// that a flood of logins leaves Check a core.
	PasswordHashers int
	// PasswordHashQueue is how many logins and registrations may wait for
	// a hasher; one more is answered 503 at once.
	PasswordHashQueue int
}

// DefaultConfig returns the configuration with every default: the one place
// defaults are written.
func DefaultConfig() Config {
	return Config{
		Config:   serve.DefaultConfig(),
		GRPCAddr: "127.0.0.1:9091", HTTPAddr: "127.0.0.1:8081",
		Issuer: "leaky-tokens-auth", Audience: "leaky-tokens",
		TokenTTL: 15 * time.Minute, RefreshTTL: 30 * 24 * time.Hour,
		KeyRotation: 30 * 24 * time.Hour, KeyRefresh: 30 * time.Second,
		APIKeyCacheTTL: 30 * time.Second, APIKeyCacheSize: 100_000,
		CheckTimeout: 150 * time.Millisecond, StoreFailure: "deny",
		PublicPaths:      []string{"/api/v1/auth/register", "/api/v1/auth/login", "/api/v1/tokens/status", "/oauth2/", "/.well-known/"},
		AdminPaths:       []string{"/api/v1/admin/"},
		AdminUsername:    "admin",
		AdminEmail:       "admin@localhost",
		DefaultMaxTokens: 1024,
		Argon2MemoryKiB:  19 * 1024, Argon2Time: 2,
		PasswordHashQueue: 32,
	}
}

// RegisterFlags defines every field as a flag on fs, defaulting to its
// default value, and binds it to c.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	d := DefaultConfig()
	fs.StringVar(&c.GRPCAddr, "grpc-addr", d.GRPCAddr, "ext_authz gRPC listen address")
	fs.StringVar(&c.HTTPAddr, "http-addr", d.HTTPAddr, "HTTP listen address (REST, OAuth2, JWKS, health, metrics)")
	fs.StringVar(&c.PublicURL, "public-url", d.PublicURL, "base URL of the HTTP API in discovery metadata (default http://<http-addr>)")
	fs.StringVar(&c.DatabaseURL, "database-url", d.DatabaseURL, "PostgreSQL URL; empty uses the memory store")
	fs.StringVar(&c.PolicyPath, "policy", d.PolicyPath, "policy file, or a directory holding it (as the ratelimit service's -config); empty uses the embedded example")
	fs.StringVar(&c.ConfigXDS, "config-xds", d.ConfigXDS, "host:port of the control plane's ADS server to take the policy from (then -policy is the start policy, not watched)")
	fs.StringVar(&c.SigningSecret, "signing-secret", d.SigningSecret, "secret sealing the signing keys (required with a database)")
	fs.StringVar(&c.Issuer, "issuer", d.Issuer, "token issuer (iss)")
	fs.StringVar(&c.Audience, "audience", d.Audience, "token audience (aud)")
	fs.DurationVar(&c.TokenTTL, "token-ttl", d.TokenTTL, "access token lifetime")
	fs.DurationVar(&c.RefreshTTL, "refresh-ttl", d.RefreshTTL, "refresh token lifetime")
	fs.DurationVar(&c.KeyRotation, "key-rotation", d.KeyRotation, "signing key rotation period")
	fs.DurationVar(&c.KeyRefresh, "key-refresh", d.KeyRefresh, "signing key reload interval")
	fs.DurationVar(&c.APIKeyCacheTTL, "api-key-cache-ttl", d.APIKeyCacheTTL, "how long a verified API key is cached")
	fs.IntVar(&c.APIKeyCacheSize, "api-key-cache-size", d.APIKeyCacheSize, "API key cache entries")
	fs.DurationVar(&c.CheckTimeout, "check-timeout", d.CheckTimeout, "deadline of Check's store calls")
	fs.StringVar(&c.StoreFailure, "store-failure", d.StoreFailure, "Check's answer when the store fails: deny (503) or error (gRPC UNAVAILABLE)")
	c.PublicPaths, c.AdminPaths = d.PublicPaths, d.AdminPaths
	fs.Var((*listFlag)(&c.PublicPaths), "public-paths", "comma-separated path prefixes allowed without credentials")
	fs.Var((*listFlag)(&c.AdminPaths), "admin-paths", "comma-separated path prefixes that require role ADMIN")
	fs.StringVar(&c.AdminUsername, "admin-username", d.AdminUsername, "bootstrap admin username (empty: none)")
	fs.StringVar(&c.AdminPassword, "admin-password", d.AdminPassword, "bootstrap admin password (empty: generated and printed once)")
	fs.StringVar(&c.AdminEmail, "admin-email", d.AdminEmail, "bootstrap admin email")
	fs.Int64Var(&c.DefaultMaxTokens, "default-max-tokens", d.DefaultMaxTokens, "completion tokens assumed when a request names no limit")
	fs.IntVar(&c.Argon2MemoryKiB, "argon2-memory-kib", d.Argon2MemoryKiB, "argon2id memory cost (KiB)")
	fs.IntVar(&c.Argon2Time, "argon2-time", d.Argon2Time, "argon2id passes")
	fs.IntVar(&c.PasswordHashers, "password-hashers", d.PasswordHashers, "password hashes run at once (0: GOMAXPROCS-1, at least 1)")
	fs.IntVar(&c.PasswordHashQueue, "password-hash-queue", d.PasswordHashQueue, "logins and registrations waiting for a hasher before more are refused 503")
	c.Config = d.Config
	c.Config.RegisterFlags(fs)
}

// LoadConfig reads the configuration from the environment alone (LEAKY_*
// variables) and validates it.
func LoadConfig(getenv func(string) string) (Config, error) {
	var c Config
	fs := flag.NewFlagSet("authz", flag.ContinueOnError)
	c.RegisterFlags(fs)
	if err := flagenv.Parse(fs, nil, getenv); err != nil {
		return Config{}, err
	}
	return c, c.Validate()
}

// Validate reports every problem at once.
func (c *Config) Validate() error {
	var errs []error
	check := func(ok bool, format string, args ...any) {
		if !ok {
			errs = append(errs, fmt.Errorf(format, args...))
		}
	}
	check(c.GRPCAddr != "", "grpc-addr: must be set")
	check(c.HTTPAddr != "", "http-addr: must be set")
	if c.PublicURL != "" {
		u, err := url.Parse(c.PublicURL)
		check(err == nil && (u.Scheme == "http" || u.Scheme == "https") && u.Host != "" && u.RawQuery == "" && u.Fragment == "",
			"public-url %q: an absolute http or https URL without query or fragment", c.PublicURL)
	}
	check(c.DatabaseURL == "" || c.SigningSecret != "", "signing-secret: required with a database")
	if c.ConfigXDS != "" {
		if err := xdsconfig.ValidateAddr(c.ConfigXDS); err != nil {
			errs = append(errs, fmt.Errorf("config-xds: %w", err))
		}
	}
	check(c.SigningSecret == "" || len(c.SigningSecret) >= 16, "signing-secret: at least 16 characters")
	check(c.Issuer != "", "issuer: must be set")
	check(c.Audience != "", "audience: must be set")
	check(c.TokenTTL >= time.Second, "token-ttl: at least 1s")
	check(c.RefreshTTL >= c.TokenTTL, "refresh-ttl: at least token-ttl")
	check(c.KeyRotation >= time.Minute, "key-rotation: at least 1m")
	check(c.KeyRefresh >= 100*time.Millisecond && c.KeyRefresh < c.KeyRotation, "key-refresh: at least 100ms and below key-rotation")
	check(c.APIKeyCacheTTL >= 0, "api-key-cache-ttl: must not be negative")
	check(c.APIKeyCacheSize > 0, "api-key-cache-size: must be positive")
	check(c.CheckTimeout > 0 && c.CheckTimeout <= 150*time.Millisecond, "check-timeout: above 0 and at most 150ms (Envoy waits 200ms)")
	check(c.StoreFailure == "deny" || c.StoreFailure == "error", "store-failure %q: deny or error", c.StoreFailure)
	check(c.DefaultMaxTokens >= 0, "default-max-tokens: must not be negative")
	check(c.Argon2MemoryKiB >= 8 && c.Argon2Time >= 1, "argon2: memory at least 8 KiB and time at least 1")
	check(c.PasswordHashers >= 0, "password-hashers: must not be negative")
	check(c.PasswordHashQueue >= 0, "password-hash-queue: must not be negative")
	errs = append(errs, c.Config.Validate())
	for _, p := range append(append([]string{}, c.PublicPaths...), c.AdminPaths...) {
		check(strings.HasPrefix(p, "/"), "path prefix %q: must start with /", p)
	}
	return errors.Join(errs...)
}

// listFlag is a comma-separated list flag.
type listFlag []string

func (l *listFlag) String() string {
	if l == nil {
		return ""
	}
	return strings.Join(*l, ",")
}

func (l *listFlag) Set(s string) error {
	*l = nil
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			*l = append(*l, p)
		}
	}
	return nil
}
