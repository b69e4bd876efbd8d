// Package xdstest runs a real ADS server for tests of xDS consumers:
// go-control-plane v0.14's snapshot cache and server/v3 on a loopback
// port, one snapshot for every node (as the control plane serves it) or,
// with Options.NodeID, for that node only (as Envoy Gateway serves its
// ratelimit), optionally behind mutual TLS, and a record of every request
// its callbacks saw, so a test can wait for an ACK or a NACK. Each
// resource type keeps its own version: setting one type leaves the
// others' resources and versions as they were.
package xdstest

import (
	"context"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"crypto/tls"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	runtimev3 "github.com/envoyproxy/go-control-plane/envoy/service/runtime/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	rlconfv3 "github.com/envoyproxy/go-control-plane/ratelimit/config/ratelimit/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/leakytokens/leaky/controlplane/model"
)

// Server is a running ADS server. Its methods are safe for concurrent use.
type Server struct {
	Addr  string // host:port it listens on
	cache cachev3.SnapshotCache
	key   string // the snapshot's key in cache
	grpc  *grpc.Server
	done  chan struct{}

	mu       sync.Mutex // guards requests
	requests []*discoveryv3.DiscoveryRequest

	// setMu serialises the Set methods; a separate lock, since SetSnapshot
	// may wait on a stream that is in the request callback.
	setMu  sync.Mutex
	served map[string]cachev3.Resources // by type URL
}

// Options shape a Server beyond its address.
type Options struct {
	// NodeID, when set, keys the cache by node id (go-control-plane's
	// IDHash) and serves the snapshot to that node only: others get no
	// response. Empty: every node gets the one snapshot.
	NodeID string
	// TLS, when set, serves over TLS with it (e.g. ClientAuth
	// tls.RequireAndVerifyClientCert, as Envoy Gateway does).
	TLS *tls.Config
}

// everyNode hashes every node alike: one snapshot serves them all.
type everyNode struct{}

func (everyNode) ID(*corev3.Node) string { return "all" }

// Start listens on addr ("127.0.0.1:0" for a free port, or the Addr of a
// stopped Server to start its successor on the same port) and serves until
// Stop or the end of the test, plain gRPC, one snapshot for every node. It
// has no snapshot until a Set method is called.
func Start(t testing.TB, addr string) *Server {
	t.Helper()
	return StartWith(t, addr, Options{})
}

// StartWith is Start with opts.
func StartWith(t testing.TB, addr string, opts Options) *Server {
	t.Helper()
	lis, err := listen(addr)
	if err != nil {
		t.Fatalf("xdstest: listen %s: %v", addr, err)
	}
	var hash cachev3.NodeHash = everyNode{}
	key := "all"
	if opts.NodeID != "" {
		hash, key = cachev3.IDHash{}, opts.NodeID
	}
	var gopts []grpc.ServerOption
	if opts.TLS != nil {
		gopts = append(gopts, grpc.Creds(credentials.NewTLS(opts.TLS)))
	}
	s := &Server{Addr: lis.Addr().String(), cache: cachev3.NewSnapshotCache(false, hash, nil), key: key,
		grpc: grpc.NewServer(gopts...), done: make(chan struct{}), served: map[string]cachev3.Resources{}}
	cb := serverv3.CallbackFuncs{StreamRequestFunc: func(_ int64, r *discoveryv3.DiscoveryRequest) error {
		s.mu.Lock()
		s.requests = append(s.requests, proto.Clone(r).(*discoveryv3.DiscoveryRequest))
		s.mu.Unlock()
		return nil
	}}
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(s.grpc, serverv3.NewServer(context.Background(), s.cache, cb))
	go func() {
		defer close(s.done)
		_ = s.grpc.Serve(lis)
	}()
	t.Cleanup(s.Stop)
	return s
}

// listen binds addr, retrying for a while when the port is still held (a
// successor on the port of a server just stopped).
func listen(addr string) (net.Listener, error) {
	deadline := time.Now().Add(30 * time.Second)
	for {
		lis, err := net.Listen("tcp", addr)
		if err == nil || time.Now().After(deadline) {
			return lis, err
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Stop closes the listener and every stream at once (the clients see the
// server gone) and waits for the server to end. Stopping twice is fine.
func (s *Server) Stop() {
	s.grpc.Stop()
	<-s.done
}

// Runtime is the Runtime resource model.RuntimeName carrying files in its
// layer, as the control plane's translator builds it.
func Runtime(files map[string]string) *runtimev3.Runtime {
	f := make(map[string]any, len(files))
	for k, v := range files {
		f[k] = v
	}
	layer, err := structpb.NewStruct(map[string]any{model.RuntimeFilesField: f})
	if err != nil {
		panic(err) // strings only: cannot fail
	}
	return &runtimev3.Runtime{Name: model.RuntimeName, Layer: layer}
}

// SetFiles serves the configuration files as the Runtime resource, at
// version.
func (s *Server) SetFiles(t testing.TB, version string, files map[string]string) {
	t.Helper()
	s.SetRuntime(t, version, Runtime(files))
}

// SetRuntime serves res (Runtime resources, or anything a test wants to
// pass off as one) under the Runtime type at version.
func (s *Server) SetRuntime(t testing.TB, version string, res ...types.Resource) {
	t.Helper()
	s.Set(t, resourcev3.RuntimeType, version, res...)
}

// SetRateLimitConfigs serves cfgs as the whole set of RateLimitConfig
// resources at version (none: an empty set at that version).
func (s *Server) SetRateLimitConfigs(t testing.TB, version string, cfgs ...*rlconfv3.RateLimitConfig) {
	t.Helper()
	res := make([]types.Resource, len(cfgs))
	for i, c := range cfgs {
		res[i] = c
	}
	s.Set(t, resourcev3.RateLimitConfigType, version, res...)
}

// Set serves res under typeURL at version, the other types' resources
// and versions unchanged. go-control-plane names each resource by its
// proto's name field (types it does not know: ""), one resource per name.
func (s *Server) Set(t testing.TB, typeURL, version string, res ...types.Resource) {
	t.Helper()
	s.setMu.Lock()
	defer s.setMu.Unlock()
	s.served[typeURL] = cachev3.NewResources(version, res)
	snap := &cachev3.Snapshot{}
	for typ, r := range s.served {
		snap.Resources[cachev3.GetResponseType(typ)] = r
	}
	if err := s.cache.SetSnapshot(context.Background(), s.key, snap); err != nil {
		t.Fatalf("xdstest: set snapshot: %v", err)
	}
}

// Requests returns every request received so far, in order.
func (s *Server) Requests() []*discoveryv3.DiscoveryRequest {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.requests)
}

// WaitRequest polls for up to 30 s for a received request that match
// accepts and returns the first, failing the test when none comes.
func (s *Server) WaitRequest(t testing.TB, what string, match func(*discoveryv3.DiscoveryRequest) bool) *discoveryv3.DiscoveryRequest {
	t.Helper()
	return s.WaitRequestAfter(t, 0, what, match)
}

// WaitRequestAfter is WaitRequest among the requests after the first n
// (n = len(Requests()) before the change a test waits for an answer to).
func (s *Server) WaitRequestAfter(t testing.TB, n int, what string, match func(*discoveryv3.DiscoveryRequest) bool) *discoveryv3.DiscoveryRequest {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		for _, r := range s.Requests()[n:] {
			if match(r) {
				return r
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("xdstest: no %s within 30s; requests: %v", what, s.Requests())
		}
	}
}

// ACK matches the acknowledgement of version.
func ACK(version string) func(*discoveryv3.DiscoveryRequest) bool {
	return func(r *discoveryv3.DiscoveryRequest) bool {
		return r.GetResponseNonce() != "" && r.GetErrorDetail() == nil && r.GetVersionInfo() == version
	}
}

// NACK matches a rejection whose error detail contains text.
func NACK(text string) func(*discoveryv3.DiscoveryRequest) bool {
	return func(r *discoveryv3.DiscoveryRequest) bool {
		return r.GetErrorDetail() != nil && strings.Contains(r.GetErrorDetail().GetMessage(), text)
	}
}
