package loadgen

import (
	"context"
	"fmt"
	"net"
	"strings"
	"sync"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
)

// Floor is the do-nothing RateLimitService behind DESIGN §8's floor figure:
// it counts each request under its descriptors' values in a map and answers
// OK. Load-tested with the same harness, it shows what the machine, gRPC and
// the load generator cost before any decision logic, so a service's figures
// can be read against it. It is safe for concurrent use; the map grows with
// the distinct keys sent.
type Floor struct {
	rlsv3.UnimplementedRateLimitServiceServer

	mu   sync.Mutex
	hits map[string]uint64
}

var _ rlsv3.RateLimitServiceServer = (*Floor)(nil)

// NewFloor returns an empty Floor.
func NewFloor() *Floor { return &Floor{hits: make(map[string]uint64)} }

// ShouldRateLimit counts the request and answers OK.
func (f *Floor) ShouldRateLimit(_ context.Context, req *rlsv3.RateLimitRequest) (*rlsv3.RateLimitResponse, error) {
	var key strings.Builder
	for _, d := range req.GetDescriptors() {
		for _, e := range d.GetEntries() {
			key.WriteString(e.GetValue())
			key.WriteByte(0)
		}
	}
	f.mu.Lock()
	f.hits[key.String()] += uint64(max(req.GetHitsAddend(), 1))
	f.mu.Unlock()
	return &rlsv3.RateLimitResponse{OverallCode: rlsv3.RateLimitResponse_OK}, nil
}

// AuthzFloor is the do-nothing ext_authz Authorization server, the floor
// under the authz Check figures: it counts each request under its path in a
// map and allows it, setting no header. It reads no credential. It is safe
// for concurrent use; the map grows with the distinct paths sent.
type AuthzFloor struct {
	authv3.UnimplementedAuthorizationServer

	mu   sync.Mutex
	hits map[string]uint64
}

var _ authv3.AuthorizationServer = (*AuthzFloor)(nil)

// NewAuthzFloor returns an empty AuthzFloor.
func NewAuthzFloor() *AuthzFloor { return &AuthzFloor{hits: make(map[string]uint64)} }

// Check counts the request and allows it.
func (f *AuthzFloor) Check(_ context.Context, req *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	path := req.GetAttributes().GetRequest().GetHttp().GetPath()
	f.mu.Lock()
	f.hits[path]++
	f.mu.Unlock()
	return &authv3.CheckResponse{Status: &rpcstatus.Status{}, HttpResponse: &authv3.CheckResponse_OkResponse{
		OkResponse: &authv3.OkHttpResponse{},
	}}, nil
}

// ServeFloor serves a Floor and an AuthzFloor on lis until ctx is done, then
// stops gracefully.
func ServeFloor(ctx context.Context, lis net.Listener) error {
	srv := grpc.NewServer()
	rlsv3.RegisterRateLimitServiceServer(srv, NewFloor())
	authv3.RegisterAuthorizationServer(srv, NewAuthzFloor())
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		<-ctx.Done()
		srv.GracefulStop()
	}()
	err := srv.Serve(lis) // nil once GracefulStop is called
	cancel()
	<-stopped
	if err != nil {
		return fmt.Errorf("floor server: %w", err)
	}
	return nil
}
