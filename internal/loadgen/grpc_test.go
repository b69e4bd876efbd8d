package loadgen

import (
	"context"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	ratelimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/testing/protocmp"

	"github.com/leakytokens/leaky/internal/contract"
)

// fakeRLS is a do-nothing RateLimitService: OK for every user but lg-0
// (OVER_LIMIT) and lg-1 (RESOURCE_EXHAUSTED), optionally after a delay. It
// records the requests per user and the most calls it had in flight.
type fakeRLS struct {
	rlsv3.UnimplementedRateLimitServiceServer
	delay time.Duration

	mu       sync.Mutex
	byUser   map[string]int
	last     map[string]*rlsv3.RateLimitRequest
	inFlight atomic.Int64
	maxIn    atomic.Int64
}

func (f *fakeRLS) ShouldRateLimit(_ context.Context, req *rlsv3.RateLimitRequest) (*rlsv3.RateLimitResponse, error) {
	n := f.inFlight.Add(1)
	defer f.inFlight.Add(-1)
	for m := f.maxIn.Load(); n > m && !f.maxIn.CompareAndSwap(m, n); m = f.maxIn.Load() {
	}
	time.Sleep(f.delay)
	user := ""
	for _, e := range req.GetDescriptors()[0].GetEntries() {
		if e.GetKey() == contract.KeyUser {
			user = e.GetValue()
		}
	}
	f.mu.Lock()
	f.byUser[user]++
	f.last[user] = req
	f.mu.Unlock()
	switch user {
	case "lg-0":
		return &rlsv3.RateLimitResponse{OverallCode: rlsv3.RateLimitResponse_OVER_LIMIT}, nil
	case "lg-1":
		return nil, status.Error(codes.ResourceExhausted, "busy")
	}
	return &rlsv3.RateLimitResponse{OverallCode: rlsv3.RateLimitResponse_OK}, nil
}

// startRLS serves f on 127.0.0.1:0 and returns one client connection.
func startRLS(t testing.TB, f *fakeRLS) *grpc.ClientConn {
	t.Helper()
	f.byUser, f.last = make(map[string]int), make(map[string]*rlsv3.RateLimitRequest)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	rlsv3.RegisterRateLimitServiceServer(srv, f)
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(lis) }()
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		conn.Close()
		srv.Stop()
		<-done
	})
	return conn
}

func TestRateLimitClosedOverGRPC(t *testing.T) {
	f := &fakeRLS{}
	conn := startRLS(t, f)
	target, err := NewRateLimit(conn, RateLimitOptions{Keys: 10, Descriptors: 3})
	if err != nil {
		t.Fatal(err)
	}
	got := Run(t.Context(), Options{Concurrency: 8, Count: 1000}, target.Do)

	if got.Count != 1000 || !cmp.Equal(got.Errors, map[codes.Code]int64{codes.ResourceExhausted: 100}) {
		t.Errorf("Run(closed, count 1000) = count %d, errors %v, want 1000, {ResourceExhausted: 100}", got.Count, got.Errors)
	}
	if diff := cmp.Diff(map[string]int64{"OK": 800, "OVER_LIMIT": 100}, target.Answers()); diff != "" {
		t.Errorf("Answers() mismatch (-want +got):\n%s", diff)
	}
	for k := range 10 {
		if n := f.byUser["lg-"+strconv.Itoa(k)]; n != 100 {
			t.Errorf("server saw user lg-%d %d times, want 100", k, n)
		}
	}
	if got.Latency.Max <= 0 || got.Latency.P50 > got.Latency.Max {
		t.Errorf("latency = %+v, want 0 < p50 ≤ max", got.Latency)
	}
	want := &rlsv3.RateLimitRequest{Domain: contract.Domain, HitsAddend: 1, Descriptors: descriptors(
		[]string{contract.KeyProvider, "openai", contract.KeyTier, "free", contract.KeyUser, "lg-7"},
		[]string{contract.KeyProvider, "openai", contract.KeyOrg, "lg-7"},
		[]string{contract.KeyProvider, "openai"},
	)}
	if diff := cmp.Diff(want, f.last["lg-7"], protocmp.Transform()); diff != "" {
		t.Errorf("request of user lg-7 on the wire mismatch (-want +got):\n%s", diff)
	}
}

// TestOpenLoopSlowServer checks the open loop's accounting against a server
// slower than the schedule. The bounds hold however slow the machine is:
// each of the 2 slots serves at most one request per 50 ms.
func TestOpenLoopSlowServer(t *testing.T) {
	const delay = 50 * time.Millisecond
	f := &fakeRLS{delay: delay}
	conn := startRLS(t, f)
	target, err := NewRateLimit(conn, RateLimitOptions{KeyPrefix: "slow-"})
	if err != nil {
		t.Fatal(err)
	}
	// One request due every 5 ms for 500 ms: 100 intended.
	got := Run(t.Context(), Options{Mode: Open, Rate: 200, Concurrency: 2, Duration: 500 * time.Millisecond}, target.Do)

	if got.Intended != 100 || got.Count+got.Dropped != got.Intended {
		t.Errorf("intended %d, count %d, dropped %d: want 100 intended = count + dropped", got.Intended, got.Count, got.Dropped)
	}
	if got.Count < 2 || got.Count > 22 || got.Dropped < 78 {
		t.Errorf("count %d, dropped %d: want 2..22 sent (2 slots × ≤ 11 starts in 500 ms), ≥ 78 dropped", got.Count, got.Dropped)
	}
	if got.Late < 1 || got.Late > got.Count {
		t.Errorf("late %d: want 1..count (%d)", got.Late, got.Count)
	}
	if m := f.maxIn.Load(); m > 2 {
		t.Errorf("server had %d calls in flight, want ≤ concurrency 2", m)
	}
	// Request 2k+m is sent no earlier than k·50 ms and due at (2k+m)·5 ms,
	// so its latency from the due time is at least 40k+45 ms; a closed
	// loop would report about 50 ms throughout.
	k := (got.Count - 1) / 2
	if floor := time.Duration(40*k+45) * time.Millisecond; got.Latency.Max < floor {
		t.Errorf("max latency %v, want ≥ %v: latency must count from the intended send time", got.Latency.Max, floor)
	}
	if got.Latency.Min < delay {
		t.Errorf("min latency %v, want ≥ the server's delay %v", got.Latency.Min, delay)
	}
}

func TestRunStopsOnDeadServer(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	lis.Close()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	target, err := NewRateLimit(conn, RateLimitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	got := Run(t.Context(), Options{Concurrency: 4, Count: 20}, target.Do)
	if got.Count != 20 || got.Errors[codes.Unavailable] != 20 {
		t.Errorf("Run against a closed port = count %d, errors %v, want 20 Unavailable", got.Count, got.Errors)
	}
	if len(target.Answers()) != 0 {
		t.Errorf("Answers() = %v, want none", target.Answers())
	}
}

func descriptors(kvs ...[]string) []*ratelimitv3.RateLimitDescriptor {
	var ds []*ratelimitv3.RateLimitDescriptor
	for _, kv := range kvs {
		d := &ratelimitv3.RateLimitDescriptor{}
		for i := 0; i+1 < len(kv); i += 2 {
			d.Entries = append(d.Entries, &ratelimitv3.RateLimitDescriptor_Entry{Key: kv[i], Value: kv[i+1]})
		}
		ds = append(ds, d)
	}
	return ds
}

// BenchmarkRateLimitClosed measures the harness against the do-nothing
// server in the same process: ns/op is client plus server per request, the
// floor under any figure `make bench` reports.
func BenchmarkRateLimitClosed(b *testing.B) {
	conn := startRLS(b, &fakeRLS{})
	target, err := NewRateLimit(conn, RateLimitOptions{KeyPrefix: "bench-"})
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	res := Run(b.Context(), Options{Concurrency: 64, Count: int64(b.N)}, target.Do)
	b.StopTimer()
	if res.ErrorCount() > 0 {
		b.Fatalf("errors: %v", res.Errors)
	}
	b.ReportMetric(float64(res.Latency.P99)/1e6, "p99-ms")
}

func TestFloor(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	served := make(chan error, 1)
	go func() { served <- ServeFloor(ctx, lis) }()
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	target, err := NewRateLimit(conn, RateLimitOptions{Keys: 3, Descriptors: 3})
	if err != nil {
		t.Fatal(err)
	}
	res := Run(t.Context(), Options{Concurrency: 4, Count: 30}, target.Do)
	if res.Count != 30 || res.Errors != nil || !cmp.Equal(target.Answers(), map[string]int64{"OK": 30}) {
		t.Errorf("Run against the floor = count %d, errors %v, answers %v, want 30 OK", res.Count, res.Errors, target.Answers())
	}
	checks, err := NewAuthz(conn, AuthzOptions{APIKey: "any"})
	if err != nil {
		t.Fatal(err)
	}
	res = Run(t.Context(), Options{Concurrency: 4, Count: 30}, checks.Do)
	if res.Count != 30 || res.Errors != nil || !cmp.Equal(checks.Answers(), map[string]int64{"OK": 30}) {
		t.Errorf("Check against the floor = count %d, errors %v, answers %v, want 30 OK", res.Count, res.Errors, checks.Answers())
	}
	cancel()
	select {
	case err := <-served:
		if err != nil {
			t.Errorf("ServeFloor() = %v after cancel, want nil", err)
		}
	case <-time.After(30 * time.Second): // a hang guard for a loaded machine
		t.Fatal("ServeFloor did not return within 30 s of cancel")
	}
}
