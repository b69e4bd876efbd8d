package controlplane

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"github.com/hashicorp/consul/api"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/xds"

	"github.com/leakytokens/leaky/controlplane/model"
	"github.com/leakytokens/leaky/internal/policy"
	"github.com/leakytokens/leaky/internal/testenv"
)

// countingRLS answers every ShouldRateLimit OK and counts the calls, so a
// test can tell which instance a call reached.
type countingRLS struct {
	rlsv3.UnimplementedRateLimitServiceServer
	calls atomic.Int64
}

func (c *countingRLS) ShouldRateLimit(context.Context, *rlsv3.RateLimitRequest) (*rlsv3.RateLimitResponse, error) {
	c.calls.Add(1)
	return &rlsv3.RateLimitResponse{OverallCode: rlsv3.RateLimitResponse_OK}, nil
}

func serveRLS(t *testing.T) (*countingRLS, int) {
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
	return rls, lis.Addr().(*net.TCPAddr).Port
}

// grpc-go's xDS resolver is a second real xDS consumer of the control
// plane: it resolves xds:///leaky-ratelimit-grpc through the proxyless
// snapshot (the control plane serves it to nodes whose user agent is a
// gRPC library), reaches the instance registered in Consul, and follows
// the endpoint change when that instance is replaced in the catalog.
func TestGRPCXDSClientFollowsConsul(t *testing.T) {
	agent := testenv.StartConsul(t)
	client, err := api.NewClient(&api.Config{Address: agent.Addr})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	t.Cleanup(hs.Close)
	f := &agentFixture{t: t, agent: agent, client: client, health: hs.URL}
	first, firstPort := serveRLS(t)
	second, secondPort := serveRLS(t)
	for _, s := range model.Required(mustExample()) {
		if s != model.ServiceRatelimitGRPC {
			f.register(s, s, requiredPort(s))
		}
	}
	f.register(model.ServiceRatelimitGRPC, "rls-1", firstPort)

	cfg := testConfig(writePolicy(t, policy.Example()), newIssuer(t))
	cfg.ConsulAddr = agent.Addr
	c := startCP(t, cfg, Deps{Catalog: agentClient{client}, KV: agentClient{client}})
	eventually(t, "a first push", func() bool { return c.Version() != "" })

	bootstrap := fmt.Sprintf(`{"xds_servers":[{"server_uri":%q,"channel_creds":[{"type":"insecure"}],"server_features":["xds_v3"]}],"node":{"id":"grpc-client-1"}}`, c.XDSAddr())
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
	rls := rlsv3.NewRateLimitServiceClient(conn)
	call := func() {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := rls.ShouldRateLimit(ctx, &rlsv3.RateLimitRequest{Domain: "d"}, grpc.WaitForReady(true)); err != nil {
			t.Fatalf("a call through xds:///%s: %v", model.ServiceRatelimitGRPC, err)
		}
	}
	call()
	if first.calls.Load() != 1 || second.calls.Load() != 0 {
		t.Fatalf("calls: first %d, second %d; want the instance registered in Consul", first.calls.Load(), second.calls.Load())
	}

	f.register(model.ServiceRatelimitGRPC, "rls-2", secondPort)
	f.deregister("rls-1")
	eventually(t, "a call reaching the instance that replaced the first in Consul", func() bool {
		call()
		return second.calls.Load() > 0
	})
	before := first.calls.Load()
	for range 5 {
		call()
	}
	if got := first.calls.Load(); got != before {
		t.Errorf("the deregistered instance (port %s) got %d more calls", strconv.Itoa(firstPort), got-before)
	}
}
