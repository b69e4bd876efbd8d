package serve

import (
	"errors"
	"flag"
	"math"
	"time"
)

// Config is what every service's runtime is bounded by. Services embed it
// in their own Config and call its RegisterFlags, so every service has the
// same flags with the same defaults (DefaultConfig, the one place they are
// written). The listen addresses are not here: each service names its own.
type Config struct {
	// GRPCMaxConcurrentStreams bounds the streams (calls) open at once on one
	// gRPC connection; it is advertised as SETTINGS_MAX_CONCURRENT_STREAMS
	// and a stream beyond it is refused with REFUSED_STREAM. Envoy
	// multiplexes many calls on few connections and opens another connection
	// when a server's limit is reached, so the default is high.
	GRPCMaxConcurrentStreams int
	// MaxConnections bounds the open connections of each listener (gRPC and
	// HTTP separately). Beyond it the runtime stops accepting: a new
	// connection waits in the kernel's backlog until one closes.
	MaxConnections int
	// GRPCMaxConnectionIdle closes (GOAWAY) a gRPC connection that has had no
	// open stream for this long.
	GRPCMaxConnectionIdle time.Duration
	// GRPCKeepaliveTime is how long a gRPC connection may be silent before the
	// server pings it; GRPCKeepaliveTimeout how long it waits for the ack
	// before closing the connection.
	GRPCKeepaliveTime    time.Duration
	GRPCKeepaliveTimeout time.Duration
	// GRPCMinPingInterval is the shortest interval at which a client may ping
	// (with or without open streams, as Envoy's connection keepalive does);
	// a client pinging faster is sent GOAWAY ENHANCE_YOUR_CALM.
	GRPCMinPingInterval time.Duration

	// HTTPIdleTimeout closes an HTTP keep-alive connection idle this long.
	HTTPIdleTimeout time.Duration
	// HTTPReadHeaderTimeout bounds reading a request's headers,
	// HTTPReadTimeout the whole request, HTTPWriteTimeout writing the answer.
	HTTPReadHeaderTimeout time.Duration
	HTTPReadTimeout       time.Duration
	HTTPWriteTimeout      time.Duration
	// HTTPMaxHeaderBytes bounds a request's header block, in bytes.
	HTTPMaxHeaderBytes int

	// ReadinessInterval is how often the readiness probes run;
	// ReadinessTimeout bounds one run of each probe.
	ReadinessInterval time.Duration
	ReadinessTimeout  time.Duration
	// ShutdownDelay is how long the service stays up after it has turned
	// NOT_SERVING (and /readyz 503) at shutdown, so that health checkers see
	// it before the listeners close. Zero: no delay.
	ShutdownDelay time.Duration
	// ShutdownGrace bounds the graceful stop that follows: in-flight calls
	// and requests that have not finished by then are cut.
	ShutdownGrace time.Duration
}

// DefaultConfig returns the defaults every service starts from.
func DefaultConfig() Config {
	return Config{
		GRPCMaxConcurrentStreams: 1024,
		MaxConnections:           4096,
		GRPCMaxConnectionIdle:    5 * time.Minute,
		GRPCKeepaliveTime:        time.Minute,
		GRPCKeepaliveTimeout:     20 * time.Second,
		GRPCMinPingInterval:      10 * time.Second,
		HTTPIdleTimeout:          30 * time.Second,
		HTTPReadHeaderTimeout:    5 * time.Second,
		HTTPReadTimeout:          30 * time.Second,
		HTTPWriteTimeout:         30 * time.Second,
		HTTPMaxHeaderBytes:       64 << 10,
		ReadinessInterval:        time.Second,
		ReadinessTimeout:         200 * time.Millisecond,
		ShutdownGrace:            10 * time.Second,
	}
}

// RegisterFlags adds a flag for every field to fs, with c's current values
// as defaults (start from DefaultConfig).
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.IntVar(&c.GRPCMaxConcurrentStreams, "grpc-max-concurrent-streams", c.GRPCMaxConcurrentStreams, "most streams open at once on one gRPC connection (advertised to clients)")
	fs.IntVar(&c.MaxConnections, "max-connections", c.MaxConnections, "most open connections per listener (gRPC and HTTP each); beyond it new connections wait")
	fs.DurationVar(&c.GRPCMaxConnectionIdle, "grpc-max-connection-idle", c.GRPCMaxConnectionIdle, "close a gRPC connection with no open stream for this long")
	fs.DurationVar(&c.GRPCKeepaliveTime, "grpc-keepalive-time", c.GRPCKeepaliveTime, "ping a gRPC connection silent for this long")
	fs.DurationVar(&c.GRPCKeepaliveTimeout, "grpc-keepalive-timeout", c.GRPCKeepaliveTimeout, "close a gRPC connection whose ping is not answered within this")
	fs.DurationVar(&c.GRPCMinPingInterval, "grpc-min-ping-interval", c.GRPCMinPingInterval, "shortest interval at which a gRPC client may ping")
	fs.DurationVar(&c.HTTPIdleTimeout, "http-idle-timeout", c.HTTPIdleTimeout, "close an idle HTTP keep-alive connection after this")
	fs.DurationVar(&c.HTTPReadHeaderTimeout, "http-read-header-timeout", c.HTTPReadHeaderTimeout, "deadline for reading an HTTP request's headers")
	fs.DurationVar(&c.HTTPReadTimeout, "http-read-timeout", c.HTTPReadTimeout, "deadline for reading a whole HTTP request")
	fs.DurationVar(&c.HTTPWriteTimeout, "http-write-timeout", c.HTTPWriteTimeout, "deadline for writing an HTTP answer")
	fs.IntVar(&c.HTTPMaxHeaderBytes, "http-max-header-bytes", c.HTTPMaxHeaderBytes, "bound on an HTTP request's headers, in bytes")
	fs.DurationVar(&c.ReadinessInterval, "readiness-interval", c.ReadinessInterval, "how often the readiness probes run")
	fs.DurationVar(&c.ReadinessTimeout, "readiness-timeout", c.ReadinessTimeout, "deadline of one readiness probe")
	fs.DurationVar(&c.ShutdownDelay, "shutdown-delay", c.ShutdownDelay, "at shutdown, how long to stay up NOT_SERVING before closing the listeners")
	fs.DurationVar(&c.ShutdownGrace, "shutdown-grace", c.ShutdownGrace, "bound on the graceful stop")
}

// Validate reports every problem with c.
func (c Config) Validate() error {
	var errs []error
	check := func(ok bool, msg string) {
		if !ok {
			errs = append(errs, errors.New(msg))
		}
	}
	check(c.GRPCMaxConcurrentStreams >= 1 && c.GRPCMaxConcurrentStreams <= math.MaxUint32, "grpc-max-concurrent-streams: from 1 to 2^32-1")
	check(c.MaxConnections >= 1, "max-connections: at least 1")
	check(c.GRPCMaxConnectionIdle > 0, "grpc-max-connection-idle: must be positive")
	check(c.GRPCKeepaliveTime > 0, "grpc-keepalive-time: must be positive")
	check(c.GRPCKeepaliveTimeout > 0, "grpc-keepalive-timeout: must be positive")
	check(c.GRPCMinPingInterval > 0, "grpc-min-ping-interval: must be positive")
	check(c.HTTPIdleTimeout > 0, "http-idle-timeout: must be positive")
	check(c.HTTPReadHeaderTimeout > 0, "http-read-header-timeout: must be positive")
	check(c.HTTPReadTimeout >= 0 && c.HTTPWriteTimeout >= 0, "http-read-timeout, http-write-timeout: must not be negative (0: none)")
	check(c.HTTPMaxHeaderBytes >= 1<<10, "http-max-header-bytes: at least 1024")
	check(c.ReadinessInterval > 0, "readiness-interval: must be positive")
	check(c.ReadinessTimeout > 0, "readiness-timeout: must be positive")
	check(c.ShutdownDelay >= 0, "shutdown-delay: must not be negative")
	check(c.ShutdownGrace > 0, "shutdown-grace: must be positive")
	return errors.Join(errs...)
}
