// Package xdsconfig is the configuration subscriber of the ratelimit
// service and authz: an ADS client (state of the world) of the control
// plane that asks for the one Runtime resource model.RuntimeName, reads the
// configuration files of its layer, validates them with the policy loader
// and hands the snapshot to the service. With Options.RateLimitConfigs it
// also takes envoyproxy/ratelimit's RateLimitConfig resources on the same
// stream, each converted to the rule file it stands for (rls.go), so that
// a control plane built for envoyproxy/ratelimit (Envoy Gateway's) drives
// the ratelimit service unchanged. A configuration that fails is NACKed
// with the reason and the last good one keeps serving; a broken stream is
// reopened with jittered exponential backoff.
package xdsconfig

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"strconv"
	"sync"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/leakytokens/leaky/controlplane/model"
	"github.com/leakytokens/leaky/internal/policy"
	"github.com/leakytokens/leaky/internal/serve"
)

// Log keys of the subscriber's lines.
const (
	keyAddr    = "xds_addr" // the control plane's ADS address
	keyVersion = "version"  // a response's version_info
	keyRetryIn = "retry_in" // the wait before the next connection attempt
	keyType    = "type_url" // the resource type of a response
)

// maxRecvMsg bounds one response: the configuration files travel in it,
// each at most policy.MaxFileSize.
const maxRecvMsg = 64 << 20

// nackPauseMin and nackPauseMax bound the wait before NACKing a version
// the server sends again after it was rejected. A plain go-control-plane
// snapshot cache answers a NACK (which carries the last applied version)
// with the same rejected snapshot at once; without the pause the two would
// loop as fast as the network goes. While the client waits the server has
// no request to answer, so a corrected snapshot set meanwhile arrives with
// the next NACK, at most nackPauseMax later.
const (
	nackPauseMin = 100 * time.Millisecond
	nackPauseMax = time.Second
)

// Node identifies a subscriber to the control plane: node.id and
// node.cluster of its requests.
type Node struct {
	ID      string
	Cluster string
}

// NodeFor is the node of one process of service: cluster service, id
// service-<hostname>-<pid>, so that two processes on one host differ.
func NodeFor(service string) Node {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "unknown"
	}
	return Node{ID: service + "-" + host + "-" + strconv.Itoa(os.Getpid()), Cluster: service}
}

// Options are a Subscriber's settings besides its address and apply
// function.
type Options struct {
	Node       Node                  // required: ID at least
	Logger     *slog.Logger          // nil: no logs
	Registerer prometheus.Registerer // the service's registry; nil: metrics not exported
	MinBackoff time.Duration         // first reconnection wait; 0: 100 ms
	MaxBackoff time.Duration         // longest reconnection wait; 0: 5 s
	TLS        *TLSFiles             // nil: plain gRPC
	// RateLimitConfigs subscribes to RateLimitConfigType too (wildcard:
	// every resource of the type). The configuration handed to apply is
	// then the Runtime's files, or Start's until a Runtime arrives, plus
	// one rule file per RateLimitConfig (see compose).
	RateLimitConfigs bool
	// Start is the configuration the service started on, by file name
	// (policy.Snapshot.Files): the base of the RateLimitConfigs' files
	// until a Runtime arrives. Used only with RateLimitConfigs.
	Start map[string][]byte
}

// Subscriber follows the Runtime resource of one control plane, and its
// RateLimitConfig resources when asked to. Build it with New and call Run
// once.
type Subscriber struct {
	addr   string
	source string // the snapshots' source: "xds " + addr
	node   *corev3.Node
	apply  func(*policy.Snapshot) error
	log    *slog.Logger
	m      *metrics
	tls    *TLSFiles
	start  map[string][]byte

	minBackoff, maxBackoff time.Duration

	// The subscriptions, in the order of the first requests: the Runtime,
	// then the RateLimitConfigs (nil unless Options.RateLimitConfigs).
	runtime, rls *subscription

	// Owned by Run's goroutine.
	digest       [sha256.Size]byte // of the configuration last applied
	applied      bool              // whether digest is set
	runtimeFiles map[string][]byte // of the Runtime last applied; nil before the first
	rlsFiles     []rlsFile         // of the RateLimitConfigs last applied

	mu sync.Mutex // guards the subscriptions' version
}

// subscription is one resource type the subscriber asks for.
type subscription struct {
	typeURL string
	names   []string // resource_names; nil: wildcard
	info    *prometheus.GaugeVec

	version string // version_info of the response last applied; guarded by Subscriber.mu

	// Owned by Run's goroutine.
	rejectedVersion string // the version last rejected, and why
	rejectedErr     string
	repeats         int // how often that version came back since
}

// ValidateAddr checks an ADS address: host:port with a port 1-65535.
func ValidateAddr(addr string) error {
	_, err := model.ParseEndpoint(addr)
	return err
}

// New returns a subscriber of the ADS server at addr (host:port; plain
// gRPC, or TLS with opts.TLS, whose files are read here once to fail
// early) that hands every configuration it receives, validated, to apply.
// apply installs a snapshot in the service or refuses it with an error
// (the refusal is NACKed); it is called from Run's goroutine only. The
// metrics are registered in opts.Registerer here.
func New(addr string, apply func(*policy.Snapshot) error, opts Options) (*Subscriber, error) {
	if err := ValidateAddr(addr); err != nil {
		return nil, fmt.Errorf("xds address: %w", err)
	}
	if apply == nil {
		return nil, errors.New("xds subscriber: no apply function")
	}
	if opts.Node.ID == "" {
		return nil, errors.New("xds subscriber: node id required")
	}
	if opts.TLS != nil {
		if _, err := opts.TLS.Config(); err != nil {
			return nil, err
		}
	}
	m, err := newMetrics(opts.Registerer, opts.RateLimitConfigs)
	if err != nil {
		return nil, err
	}
	s := &Subscriber{
		addr: addr, source: "xds " + addr, apply: apply, log: opts.Logger, m: m, tls: opts.TLS,
		node:       &corev3.Node{Id: opts.Node.ID, Cluster: opts.Node.Cluster},
		minBackoff: opts.MinBackoff, maxBackoff: opts.MaxBackoff,
		runtime: &subscription{typeURL: RuntimeType, names: []string{model.RuntimeName}, info: m.info},
	}
	if opts.RateLimitConfigs {
		s.rls = &subscription{typeURL: RateLimitConfigType, info: m.rlsInfo}
		s.start = opts.Start
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.minBackoff <= 0 {
		s.minBackoff = 100 * time.Millisecond
	}
	if s.maxBackoff <= 0 {
		s.maxBackoff = 5 * time.Second
	}
	s.maxBackoff = max(s.maxBackoff, s.minBackoff)
	return s, nil
}

// Version is the version_info of the Runtime last applied from xDS, ""
// before the first. Safe for concurrent use.
func (s *Subscriber) Version() string { return s.versionOf(s.runtime) }

// RateLimitConfigVersion is the version_info of the RateLimitConfigs last
// applied, "" before the first or without Options.RateLimitConfigs. Safe
// for concurrent use.
func (s *Subscriber) RateLimitConfigVersion() string { return s.versionOf(s.rls) }

func (s *Subscriber) versionOf(sub *subscription) string {
	if sub == nil {
		return ""
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return sub.version
}

// subscriptions are the types asked for, the Runtime first.
func (s *Subscriber) subscriptions() []*subscription {
	if s.rls == nil {
		return []*subscription{s.runtime}
	}
	return []*subscription{s.runtime, s.rls}
}

// Degraded is what the service's /readyz says of its configuration: until
// the first configuration from the control plane is applied, that it
// serves its start configuration (the -config file, or the embedded
// example). Nil for a nil Subscriber, so a service without -config-xds can
// pass s.xds.Degraded as it is.
func (s *Subscriber) Degraded() []string {
	if s == nil || s.Version() != "" || s.RateLimitConfigVersion() != "" {
		return nil
	}
	return []string{"config: no configuration from the control plane at " + s.addr + " yet; serving the start configuration"}
}

func (s *Subscriber) setVersion(sub *subscription, v string) {
	s.mu.Lock()
	sub.version = v
	s.mu.Unlock()
	sub.info.Reset()
	sub.info.WithLabelValues(v).Set(1)
}

// Run subscribes until ctx ends, reopening the stream after any error with
// jittered exponential backoff (reset once a stream has delivered a
// response). A new stream asks again with the version last applied, so a
// server that goes by versions sends only a newer one (one that sends the
// same configuration again gets an ACK and no apply). The first failure
// of a series is logged as a warning, the retries at debug level. It
// returns nil when ctx ends.
func (s *Subscriber) Run(ctx context.Context) error {
	attempt := 0
	for {
		received, err := s.session(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if received {
			attempt = 0
		}
		wait := backoff(s.minBackoff, s.maxBackoff, attempt)
		level := slog.LevelWarn
		if attempt > 0 {
			level = slog.LevelDebug
		}
		attempt++
		s.log.Log(ctx, level, "xds config stream ended; reconnecting", keyAddr, s.addr, serve.KeyError, err.Error(), keyRetryIn, wait.String())
		if !sleep(ctx, wait) {
			return nil
		}
	}
}

// backoff is the wait before attempt n (0 first): min doubled n times,
// at most max, jittered to between half and all of it.
func backoff(lo, hi time.Duration, n int) time.Duration {
	d := lo
	for range n {
		if d >= hi/2 {
			d = hi
			break
		}
		d *= 2
	}
	d = min(d, hi)
	return d/2 + rand.N(d/2+1)
}

// sleep waits d, or less when ctx ends first; it reports whether d passed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
