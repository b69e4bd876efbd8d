package translate

import (
	"context"
	"fmt"
	"net"
	"sync/atomic"
	"testing"
	"time"

	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/xds"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"

	"github.com/leakytokens/leaky/controlplane/model"
	"github.com/leakytokens/leaky/envoy/validate"
)

// countingRLS is a RateLimitService that answers OK and counts its calls,
// so the test can tell which instance a call reached.
type countingRLS struct {
	rlsv3.UnimplementedRateLimitServiceServer
	calls atomic.Int64
}

func (c *countingRLS) ShouldRateLimit(context.Context, *rlsv3.RateLimitRequest) (*rlsv3.RateLimitResponse, error) {
	c.calls.Add(1)
	return &rlsv3.RateLimitResponse{OverallCode: rlsv3.RateLimitResponse_OK}, nil
}

// startRLS serves a countingRLS on a free loopback port.
func startRLS(t *testing.T) (*countingRLS, model.Endpoint) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	rls := &countingRLS{}
	rlsv3.RegisterRateLimitServiceServer(srv, rls)
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	return rls, ep(t, lis.Addr().String())
}

// grpc-go's xDS resolver is a second real xDS consumer: it resolves
// xds:///leaky-ratelimit-grpc through the proxyless snapshot (API listener
// → inline route → cluster → EDS), calls the instance, and follows an
// endpoint change pushed as a new snapshot.
func TestProxylessGRPCClientResolvesAndFollowsEndpoints(t *testing.T) {
	first, firstEP := startRLS(t)
	second, secondEP := startRLS(t)

	m := exampleModel(t)
	m.Endpoints[model.ServiceRatelimitGRPC] = []model.Endpoint{firstEP}
	snap := proxylessSnapshot(t, m)

	const node = "proxyless-test"
	// Not in ADS mode: there go-control-plane answers a request for named
	// resources only when the snapshot holds no other resource of the
	// type, and a gRPC client names one listener of several.
	cache := cachev3.NewSnapshotCache(false, cachev3.IDHash{}, nil)
	if err := cache.SetSnapshot(context.Background(), node, snap); err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	xdsSrv := grpc.NewServer()
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(xdsSrv, serverv3.NewServer(ctx, cache, nil))
	go xdsSrv.Serve(lis)
	defer xdsSrv.Stop()

	bootstrap := fmt.Sprintf(`{"xds_servers":[{"server_uri":%q,"channel_creds":[{"type":"insecure"}],"server_features":["xds_v3"]}],"node":{"id":%q}}`,
		lis.Addr().String(), node)
	resolver, err := xds.NewXDSResolverWithConfigForTesting([]byte(bootstrap))
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient("xds:///"+model.ServiceRatelimitGRPC, grpc.WithResolvers(resolver),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := rlsv3.NewRateLimitServiceClient(conn)

	call := func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_, err := client.ShouldRateLimit(ctx, &rlsv3.RateLimitRequest{Domain: "d"}, grpc.WaitForReady(true))
		return err
	}
	if err := call(); err != nil {
		t.Fatalf("a call through xds:///%s: %v", model.ServiceRatelimitGRPC, err)
	}
	if first.calls.Load() != 1 || second.calls.Load() != 0 {
		t.Fatalf("calls: first %d, second %d; want the first instance", first.calls.Load(), second.calls.Load())
	}

	m.Endpoints[model.ServiceRatelimitGRPC] = []model.Endpoint{secondEP}
	if err := cache.SetSnapshot(context.Background(), node, proxylessSnapshot(t, m)); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for second.calls.Load() == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("after the endpoint change no call reached the new instance (first %d)", first.calls.Load())
		}
		if err := call(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	before := first.calls.Load()
	for range 5 {
		if err := call(); err != nil {
			t.Fatal(err)
		}
	}
	if first.calls.Load() != before {
		t.Errorf("the removed instance still got calls after the change")
	}
}

// proxylessSnapshot is Proxyless(m), every resource passing validation.
func proxylessSnapshot(t *testing.T, m *model.Model) *cachev3.Snapshot {
	t.Helper()
	snap, err := Proxyless(m)
	if err != nil {
		t.Fatal(err)
	}
	for _, rs := range snap.Resources {
		for _, r := range rs.Items {
			if err := validate.Resource(r.Resource); err != nil {
				t.Fatalf("%s: %v", cachev3.GetResourceName(r.Resource), err)
			}
		}
	}
	return snap
}
