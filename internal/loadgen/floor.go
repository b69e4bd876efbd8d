package loadgen

import (
	"context"
	"fmt"
	"net"
	"strings"
	"sync"

	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
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

// ServeFloor serves a Floor on lis until ctx is done, then stops gracefully.
func ServeFloor(ctx context.Context, lis net.Listener) error {
	srv := grpc.NewServer()
	rlsv3.RegisterRateLimitServiceServer(srv, NewFloor())
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
