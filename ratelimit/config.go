// Package ratelimit is the rate-limit service: Envoy's global rate-limit gRPC
// API (envoy.service.ratelimit.v3.RateLimitService) deciding on GCRA leaky
// buckets for domain leaky-tokens (the policy file) and on fixed windows for
// any domain configured in envoyproxy/ratelimit's YAML format.
package ratelimit

import (
	"errors"
	"flag"
	"fmt"
	"time"

	"github.com/leakytokens/leaky/internal/flagenv"
	"github.com/leakytokens/leaky/internal/serve"
	"github.com/leakytokens/leaky/internal/xdsconfig"
	"github.com/leakytokens/leaky/ratelimit/rules"
)

// Config is the service's configuration. The zero value is not valid; start
// from DefaultConfig or LoadConfig.
type Config struct {
	// Config bounds the runtime: streams, connections, idle and keep-alive
	// times, readiness, shutdown (flags shared by every service).
	serve.Config

	GRPCAddr string // host:port of the RateLimitService and gRPC health; port 0 picks one
	HTTPAddr string // host:port of /livez, /readyz, /metrics; port 0 picks one
	// ConfigPath is the policy file, an envoyproxy/ratelimit YAML file, or a
	// directory of such files (*.yaml, *.yml), read by internal/policy's
	// loader. Empty means the embedded example policy. Files are re-read
	// within ReloadInterval of a change.
	ConfigPath     string
	ReloadInterval time.Duration // how often ConfigPath is checked for changes
	// ConfigXDS is the host:port of the control plane's ADS server. When
	// set, the service starts on ConfigPath as usual but does not watch it:
	// the configuration comes from the Runtime resource the control plane
	// pushes (package xdsconfig), applied as it arrives.
	ConfigXDS string
	// With ConfigXDS the service also takes envoyproxy/ratelimit's
	// RateLimitConfig resources (as Envoy Gateway serves them). XDSNodeID
	// is the node id it subscribes as (empty: ratelimit-<host>-<pid>;
	// Envoy Gateway answers only envoy-ratelimit). XDSTLSCA turns TLS on,
	// verifying the control plane against it (and XDSTLSServerName when
	// set); XDSTLSCert and XDSTLSKey are the client certificate for mTLS.
	XDSNodeID        string
	XDSTLSCA         string
	XDSTLSCert       string
	XDSTLSKey        string
	XDSTLSServerName string

	// The store settings are the operator's, flags and environment like
	// every other field, but the service never acts on them: cmd/leaky
	// opens the store they name and hands it to New.
	Store    string // "memory" or "redis"
	RedisURL string // redis://[user:password@]host:port/db or redis+cluster://host:port,…, for Store "redis"
	// RedisTimeout bounds every Redis call (server side, below Envoy's 20 ms).
	RedisTimeout  time.Duration
	RedisPoolSize int    // connections; 0 = 10 per CPU
	RedisPrefix   string // prefix of every key this service writes
	// MemoryMaxKeys bounds the memory store: beyond it the bucket closest to
	// idle is evicted.
	MemoryMaxKeys int

	// MaxDescriptors bounds the descriptors of one request; more is
	// INVALID_ARGUMENT.
	MaxDescriptors int

	// MergeDomainConfig merges envoyproxy/ratelimit files that declare the
	// same domain (its MERGE_DOMAIN_CONFIG) instead of refusing the second.
	MergeDomainConfig bool
	// ResponseDynamicMetadata adds envoyproxy/ratelimit's dynamic_metadata
	// (its RESPONSE_DYNAMIC_METADATA) to every RateLimitResponse.
	ResponseDynamicMetadata bool
	// EnvoyFailureModeDeny says Envoy's rate-limit filter for domains other
	// than leaky-tokens has failure_mode_deny set (default false, as
	// Envoy's): their decisions then fail closed, and one that misses its
	// deadline charges nothing (README "Deadlines and phantom charges").
	EnvoyFailureModeDeny bool

	// The durable record (ledger) and its outbox's relay, opened by
	// cmd/leaky like the store. DatabaseURL empty = the in-memory ledger.
	DatabaseURL  string
	LedgerSchema string // PostgreSQL schema of the ledger's tables, created if absent
	// KafkaBrokers (host:port,…) is where the relay publishes the outbox's
	// events; empty: a PostgreSQL ledger keeps them until a relay with
	// brokers runs, the memory ledger drops them once relayed.
	KafkaBrokers    string
	KafkaTopic      string
	OutboxInterval  time.Duration // how often the relay looks at the outbox when not woken
	OutboxRetention time.Duration // how long published events stay in the outbox

	// Tokens configures the token API served on HTTPAddr
	// (/api/v1/tokens/*).
	Tokens TokensConfig
}

// DefaultConfig returns the defaults: the ports of DESIGN §2, the memory
// store, the embedded policy.
func DefaultConfig() Config {
	return Config{
		Config:         serve.DefaultConfig(),
		GRPCAddr:       "127.0.0.1:9092",
		HTTPAddr:       "127.0.0.1:8082",
		ReloadInterval: 50 * time.Millisecond,
		Store:          "memory",
		RedisURL:       "redis://127.0.0.1:6379/0",
		RedisTimeout:   15 * time.Millisecond,
		RedisPrefix:    "lt:",
		MemoryMaxKeys:  1 << 20,
		MaxDescriptors: 64,

		LedgerSchema:    "leaky_ledger",
		KafkaTopic:      "token-usage",
		OutboxInterval:  time.Second,
		OutboxRetention: 24 * time.Hour,

		Tokens: DefaultTokensConfig(),
	}
}

// RegisterFlags adds a flag for every field to fs, with the current values
// as defaults.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.GRPCAddr, "grpc-addr", c.GRPCAddr, "gRPC listen address (RateLimitService, health)")
	fs.StringVar(&c.HTTPAddr, "http-addr", c.HTTPAddr, "HTTP listen address (/livez, /readyz, /metrics, the token API /api/v1/tokens/*)")
	fs.StringVar(&c.ConfigPath, "config", c.ConfigPath, "policy file, envoyproxy/ratelimit YAML file, or a directory of them; empty = embedded example policy")
	fs.DurationVar(&c.ReloadInterval, "reload-interval", c.ReloadInterval, "how often the config path is checked for changes")
	fs.StringVar(&c.ConfigXDS, "config-xds", c.ConfigXDS, "host:port of the control plane's ADS server to take the configuration from (then -config is the start configuration, not watched)")
	fs.StringVar(&c.XDSNodeID, "xds-node-id", c.XDSNodeID, "node id of the -config-xds subscription (empty: ratelimit-<host>-<pid>; Envoy Gateway serves envoy-ratelimit)")
	fs.StringVar(&c.XDSTLSCA, "xds-tls-ca", c.XDSTLSCA, "PEM CA file the -config-xds server is verified with; turns TLS on (empty: plain gRPC)")
	fs.StringVar(&c.XDSTLSCert, "xds-tls-cert", c.XDSTLSCert, "PEM client certificate for -config-xds over mutual TLS (with -xds-tls-key)")
	fs.StringVar(&c.XDSTLSKey, "xds-tls-key", c.XDSTLSKey, "PEM private key of -xds-tls-cert")
	fs.StringVar(&c.XDSTLSServerName, "xds-tls-server-name", c.XDSTLSServerName, "name the -config-xds server's certificate must carry (empty: the host of -config-xds)")
	fs.StringVar(&c.Store, "store", c.Store, "bucket store: memory or redis")
	fs.StringVar(&c.RedisURL, "redis-url", c.RedisURL, "Redis URL for -store redis (redis://[user:password@]host:port/db), or a Redis Cluster's (redis+cluster://host:port,host:port)")
	fs.DurationVar(&c.RedisTimeout, "redis-timeout", c.RedisTimeout, "deadline of every Redis call; keep it below Envoy's 20 ms rate-limit timeout")
	fs.StringVar(&c.RedisPrefix, "redis-prefix", c.RedisPrefix, "prefix of every Redis key the service writes")
	fs.IntVar(&c.RedisPoolSize, "redis-pool-size", c.RedisPoolSize, "Redis connections (0 = 10 per CPU)")
	fs.IntVar(&c.MemoryMaxKeys, "memory-max-keys", c.MemoryMaxKeys, "bound on buckets kept by the memory store")
	fs.IntVar(&c.MaxDescriptors, "max-descriptors", c.MaxDescriptors, "most descriptors one request may carry")
	fs.BoolVar(&c.MergeDomainConfig, "merge-domain-config", c.MergeDomainConfig, "merge envoyproxy/ratelimit files of one domain (top-level descriptors, file-name order) instead of refusing the second")
	fs.BoolVar(&c.ResponseDynamicMetadata, "response-dynamic-metadata", c.ResponseDynamicMetadata, "return envoyproxy/ratelimit's dynamic_metadata (domain, descriptors, matched rules' metadata) in every answer")
	fs.BoolVar(&c.EnvoyFailureModeDeny, "envoy-failure-mode-deny", c.EnvoyFailureModeDeny, "Envoy's rate-limit filter has failure_mode_deny for domains other than leaky-tokens: their decisions fail closed (a late one charges nothing)")
	fs.StringVar(&c.DatabaseURL, "database-url", c.DatabaseURL, "PostgreSQL URL of the ledger (usage, purchases, outbox); empty: DATABASE_URL, or the in-memory ledger")
	fs.StringVar(&c.LedgerSchema, "ledger-schema", c.LedgerSchema, "PostgreSQL schema of the ledger's tables (created if absent)")
	fs.StringVar(&c.KafkaBrokers, "kafka-brokers", c.KafkaBrokers, "Kafka bootstrap servers (host:port,...) the outbox relay publishes to; empty: KAFKA_BROKERS, or no relay")
	fs.StringVar(&c.KafkaTopic, "kafka-topic", c.KafkaTopic, "Kafka topic of the usage and purchase events")
	fs.DurationVar(&c.OutboxInterval, "outbox-interval", c.OutboxInterval, "how often the relay checks the outbox when not woken by a new event")
	fs.DurationVar(&c.OutboxRetention, "outbox-retention", c.OutboxRetention, "how long published events stay in the outbox before they are pruned")
	c.Tokens.RegisterFlags(fs)
	c.Config.RegisterFlags(fs)
}

// LoadConfig returns the defaults overridden by LEAKY_* environment
// variables read through getenv.
func LoadConfig(getenv func(string) string) (Config, error) {
	c := DefaultConfig()
	fs := flag.NewFlagSet("ratelimit", flag.ContinueOnError)
	c.RegisterFlags(fs)
	if err := flagenv.Parse(fs, nil, getenv); err != nil {
		return Config{}, err
	}
	return c, c.Validate()
}

// ruleOptions are how envoyproxy/ratelimit files become a rules.Set.
func (c Config) ruleOptions() rules.Options {
	return rules.Options{MergeDomains: c.MergeDomainConfig}
}

// Validate reports every problem with c.
func (c Config) Validate() error {
	errs := []error{c.Config.Validate()}
	if c.GRPCAddr == "" {
		errs = append(errs, errors.New("grpc-addr: required"))
	}
	if c.HTTPAddr == "" {
		errs = append(errs, errors.New("http-addr: required"))
	}
	switch c.Store {
	case "memory":
	case "redis":
		if c.RedisURL == "" {
			errs = append(errs, errors.New("redis-url: required with -store redis"))
		}
	default:
		errs = append(errs, fmt.Errorf("store %q: must be memory or redis", c.Store))
	}
	if c.RedisTimeout <= 0 {
		errs = append(errs, errors.New("redis-timeout: must be positive"))
	}
	if c.ConfigXDS != "" {
		if err := xdsconfig.ValidateAddr(c.ConfigXDS); err != nil {
			errs = append(errs, fmt.Errorf("config-xds: %w", err))
		}
		if t := c.xdsTLS(); t != nil {
			if err := t.Check(); err != nil {
				errs = append(errs, fmt.Errorf("xds-tls-*: %w", err))
			}
		}
	}
	if c.ReloadInterval <= 0 {
		errs = append(errs, errors.New("reload-interval: must be positive"))
	}
	if c.MemoryMaxKeys < 1 {
		errs = append(errs, errors.New("memory-max-keys: must be at least 1"))
	}
	if c.KafkaTopic == "" {
		errs = append(errs, errors.New("kafka-topic: required"))
	}
	if c.OutboxInterval <= 0 || c.OutboxRetention <= 0 {
		errs = append(errs, errors.New("outbox-interval, outbox-retention: must be positive"))
	}
	if c.MaxDescriptors < 1 {
		errs = append(errs, errors.New("max-descriptors: must be at least 1"))
	}
	errs = append(errs, c.Tokens.Validate())
	return errors.Join(errs...)
}

// CheckConfig validates cfg and loads its configuration path (and the
// -config-xds TLS files) as New will, opening and binding nothing. cmd/leaky calls it before it opens the store
// cfg names, so that a configuration the service would refuse is reported
// as such, with its file and problem, never as a store it could not reach;
// New checks again.
func CheckConfig(cfg Config) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	if t := cfg.xdsTLS(); t != nil && cfg.ConfigXDS != "" {
		if _, err := t.Config(); err != nil {
			return err
		}
	}
	_, err := loadLimits(cfg.ConfigPath, cfg.ruleOptions())
	return err
}
