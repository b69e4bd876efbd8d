package ratelimit

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	ratelimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/leakytokens/leaky/internal/testenv"
	"github.com/leakytokens/leaky/ratelimit/redisstore"
	"github.com/leakytokens/leaky/ratelimit/store"
)

// phantomBackend is one kind of shared store for the phantom-charge test:
// open returns two stores on one backend (two service instances' stores),
// stall makes the backend run nothing for d from now on (it returns once
// the stall is in effect), and read returns a store on the same backend to
// read the buckets with once the two are closed. The table of them is
// phantomBackends: a new backend (Redis Cluster) adds one row there.
type phantomBackend struct {
	name string
	open func(t *testing.T) (a, b store.Store, stall func(d time.Duration), read func() store.Store)
}

// phantomBackends are the backends the phantom-charge test runs on.
var phantomBackends = []phantomBackend{
	{"memory", openPhantomMemory},
	{"redis", openPhantomRedis},
	{"redis cluster", openPhantomCluster},
}

// openPhantomMemory shares one Memory; its stall is a delay hook in the
// clock, which the store reads with the decision's shards locked: the
// decision that meets the stall holds its bucket until it ends, and every
// other decision on the bucket waits behind it.
func openPhantomMemory(t *testing.T) (a, b store.Store, stall func(time.Duration), read func() store.Store) {
	var until atomic.Int64 // µs; 0: no stall
	now := func() int64 {
		if u := until.Load(); u != 0 {
			time.Sleep(time.Until(time.UnixMicro(u)))
		}
		return time.Now().UnixMicro()
	}
	m := store.NewMemory(store.MemoryOptions{Now: now})
	stall = func(d time.Duration) { until.Store(time.Now().Add(d).UnixMicro()) }
	return m, m, stall, func() store.Store { return m }
}

// openPhantomRedis opens two Store values on a private Redis with the
// production decision timeout (phantomOnRedis).
func openPhantomRedis(t *testing.T) (a, b store.Store, stall func(time.Duration), read func() store.Store) {
	srv := testenv.StartRedis(t)
	return phantomOnRedis(t, srv.URL, []*testenv.Server{srv})
}

// openPhantomCluster is openPhantomRedis on a private 3-master cluster:
// the request's buckets (user, provider) sit in different slots, so a
// decision is one script per group.
func openPhantomCluster(t *testing.T) (a, b store.Store, stall func(time.Duration), read func() store.Store) {
	c := testenv.StartRedisCluster(t)
	return phantomOnRedis(t, c.URL, c.Nodes)
}

// phantomOnRedis opens two Store values on url, served by nodes. Its stall
// stops every node (SIGSTOP) and continues them d later: what was sent
// meanwhile waits in the sockets and runs after, even for a caller that
// closed its connection.
func phantomOnRedis(t *testing.T, url string, nodes []*testenv.Server) (a, b store.Store, stall func(time.Duration), read func() store.Store) {
	opts := redisstore.Options{URL: url, Prefix: testenv.Prefix(t), Timeout: phantomDecisionTimeout}
	openOne := func() store.Store {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		s, err := redisstore.New(ctx, opts)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	var cont sync.WaitGroup
	t.Cleanup(cont.Wait)
	stall = func(d time.Duration) {
		for _, n := range nodes {
			n.Stop()
		}
		cont.Go(func() {
			time.Sleep(d)
			for _, n := range nodes {
				n.Cont()
			}
		})
	}
	read = func() store.Store {
		cont.Wait()
		opts.Timeout = 5 * time.Second
		s := openOne()
		t.Cleanup(func() { closeStore(s) })
		return s
	}
	return openOne(), openOne(), stall, read
}

// The service's decision deadline in the phantom test (production's
// -redis-timeout is 15 ms): 10 ms under the callers' 20 ms, so an answer
// given in time has 10 ms to reach its caller.
const (
	phantomDecisionTimeout = 10 * time.Millisecond
	phantomCallerDeadline  = 20 * time.Millisecond
	phantomStall           = 500 * time.Millisecond
)

// phantomPolicy fails closed; a user's bucket holds 20 tokens and refills
// 20 an hour (under one token in the test's lifetime).
const phantomPolicy = `domain: leaky-tokens
failure_mode: deny
default_tier: free
tiers:
  free:
    priority: 10
    roles: [USER]
    buckets:
      "*": {capacity: 20, leak_rate: 0.0055}
providers:
  openai: {capacity: 100000, leak_rate: 0.001}
`

// No phantom charges (README "Deadlines and phantom charges"): a
// fail-closed domain, one fresh bucket of 20, two service instances on one
// backend, 64 callers with Envoy's 20 ms deadline. Wave 1, 8 callers on a
// quiet backend; wave 2, 56 callers while the backend runs nothing for
// 500 ms, so every one of them reaches it far past its deadline. The
// bucket's charge (capacity − remaining) must equal the answers the callers
// saw admitted. The one slack allowed: a wave-1 decision executed in time
// whose answer reached its caller after the deadline (its 10 ms way back
// took longer) is charged but not seen admitted; at most the wave-1
// callers that saw a timeout can be such. Wave 2 gets no slack: without
// the deadline check inside the store it charges what wave 1 left (≥ 12).
func TestNoPhantomCharges(t *testing.T) {
	for _, be := range phantomBackends {
		t.Run(be.name, func(t *testing.T) {
			a, b, stall, read := be.open(t)
			sa, sb := startPhantom(t, a), startPhantom(t, b)
			req := &rlsv3.RateLimitRequest{Domain: "leaky-tokens", HitsAddend: 1,
				Descriptors: []*ratelimitv3.RateLimitDescriptor{desc("provider=openai,tier=free,user=phantom"), desc("provider=openai")}}
			admitted1, timeouts1 := phantomWave(t, []*phantomServer{sa, sb}, 8, req)
			stall(phantomStall)
			admitted2, _ := phantomWave(t, []*phantomServer{sa, sb}, 56, req)
			it := sa.svc.plan(sa.svc.limits.Load(), req)[0].item
			sa.stop(t)
			sb.stop(t) // both stores closed: every reply read, every refund made
			it.Hits = 0
			d, err := read().Decide(context.Background(), []store.Item{it})
			if err != nil {
				t.Fatal(err)
			}
			charge, admitted := it.Limit-d.Results[0].Remaining, admitted1+admitted2
			t.Logf("wave 1: %d admitted, %d timed out; wave 2: %d admitted; charge %d", admitted1, timeouts1, admitted2, charge)
			if charge < admitted || charge > admitted+timeouts1 {
				t.Errorf("charge %d for %d admitted answers; want equal, or at most %d more (wave 1's timeouts)", charge, admitted, timeouts1)
			}
		})
	}
}

// phantomServer is a service on a store of the test's, stopped by the test.
type phantomServer struct {
	svc    *Service
	client rlsv3.RateLimitServiceClient
	conn   *grpc.ClientConn
	cancel context.CancelFunc
	done   chan error
}

func startPhantom(t *testing.T, st store.Store) *phantomServer {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "policy.yaml"), []byte(phantomPolicy), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.GRPCAddr, cfg.HTTPAddr, cfg.ConfigPath = "127.0.0.1:0", "127.0.0.1:0", dir
	cfg.ShutdownGrace = 2 * time.Second
	cfg.RedisTimeout = phantomDecisionTimeout
	svc, err := New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), st)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &phantomServer{svc: svc, cancel: cancel, done: make(chan error, 1)}
	go func() { s.done <- svc.Run(ctx) }()
	if s.conn, err = grpc.NewClient(svc.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials())); err != nil {
		t.Fatal(err)
	}
	s.client = rlsv3.NewRateLimitServiceClient(s.conn)
	t.Cleanup(func() { s.stop(t) })
	// Connect, on another user's bucket, before the deadlines count.
	warm := &rlsv3.RateLimitRequest{Domain: "leaky-tokens", Descriptors: []*ratelimitv3.RateLimitDescriptor{desc("provider=openai,tier=free,user=warm-up")}}
	wctx, wcancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer wcancel()
	if _, err := s.client.ShouldRateLimit(wctx, warm, grpc.WaitForReady(true)); err != nil {
		t.Fatalf("warm-up: %v", err)
	}
	return s
}

// stop ends the service, which closes its store; a second stop is a no-op.
func (s *phantomServer) stop(t *testing.T) {
	if s.done == nil {
		return
	}
	s.conn.Close()
	s.cancel()
	if err := <-s.done; err != nil {
		t.Errorf("Run: %v", err)
	}
	s.done = nil
}

// phantomWave sends req once from each of n callers at once, spread over
// servers, each with phantomCallerDeadline, and counts the answers seen
// admitted and the calls that timed out (no answer seen).
func phantomWave(t *testing.T, servers []*phantomServer, n int, req *rlsv3.RateLimitRequest) (admitted, timeouts int64) {
	var ok, late atomic.Int64
	var wg sync.WaitGroup
	for i := range n {
		s := servers[i%len(servers)]
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), phantomCallerDeadline)
			defer cancel()
			resp, err := s.client.ShouldRateLimit(ctx, req)
			switch {
			case err != nil:
				late.Add(1) // Envoy refuses it (fail closed)
			case resp.GetOverallCode() == rlsv3.RateLimitResponse_OK:
				ok.Add(1)
			}
		})
	}
	wg.Wait()
	return ok.Load(), late.Load()
}
