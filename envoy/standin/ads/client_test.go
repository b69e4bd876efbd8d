package ads

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/anypb"
)

const node = "ads-test"

// handler accepts every listener but those of version bad.
type handler struct {
	bad string
}

func (h *handler) Handle(_, version string, _ []*anypb.Any) error {
	if version == h.bad {
		return errors.New("version " + version + " is bad")
	}
	return nil
}

func (h *handler) Subscriptions() []Subscription {
	return []Subscription{{TypeURL: resourcev3.ListenerType}}
}

// server is an ADS server recording each request with when it came.
type server struct {
	cache cachev3.SnapshotCache
	g     *grpc.Server
	addr  string

	mu   sync.Mutex
	reqs []stamped
}

type stamped struct {
	at  time.Time
	req *discoveryv3.DiscoveryRequest
}

func startServer(t *testing.T, addr string, cache cachev3.SnapshotCache) *server {
	var lis net.Listener
	var err error
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(50 * time.Millisecond) {
		if lis, err = net.Listen("tcp", addr); err == nil || time.Now().After(deadline) {
			break
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	s := &server{cache: cache, g: grpc.NewServer(), addr: lis.Addr().String()}
	cb := serverv3.CallbackFuncs{StreamRequestFunc: func(_ int64, r *discoveryv3.DiscoveryRequest) error {
		s.mu.Lock()
		s.reqs = append(s.reqs, stamped{time.Now(), r})
		s.mu.Unlock()
		return nil
	}}
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(s.g, serverv3.NewServer(context.Background(), cache, cb))
	go s.g.Serve(lis)
	t.Cleanup(s.g.Stop)
	return s
}

func (s *server) requests() []stamped {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]stamped(nil), s.reqs...)
}

func setListener(t *testing.T, cache cachev3.SnapshotCache, version string) {
	snap, err := cachev3.NewSnapshot(version, map[string][]types.Resource{
		resourcev3.ListenerType: {&listenerv3.Listener{Name: "l-" + version}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := cache.SetSnapshot(context.Background(), node, snap); err != nil {
		t.Fatal(err)
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(time.Minute); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

func TestNACKRepeatsSlowerThenACKThenResumesAfterReconnect(t *testing.T) {
	cache := cachev3.NewSnapshotCache(true, cachev3.IDHash{}, nil)
	setListener(t, cache, "v1")
	srv := startServer(t, "127.0.0.1:0", cache)
	conn, err := grpc.NewClient(srv.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	c := New(conn, Config{Node: &corev3.Node{Id: node}, MinBackoff: 20 * time.Millisecond, MaxBackoff: 4 * time.Second},
		&handler{bad: "v1"}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	defer func() { cancel(); <-done }()

	var nacks []stamped
	waitFor(t, "three NACKs of v1", func() bool {
		nacks = nacks[:0]
		for _, r := range srv.requests() {
			if r.req.GetErrorDetail() != nil {
				nacks = append(nacks, r)
			}
		}
		return len(nacks) >= 3
	})
	for _, n := range nacks {
		if n.req.GetVersionInfo() != "" || n.req.GetResponseNonce() == "" || n.req.GetErrorDetail().GetMessage() != "version v1 is bad" {
			t.Errorf("NACK = %v, want no version accepted yet, the nonce and the error", n.req)
		}
	}
	// Lower bounds only: a loaded machine can make the gaps longer, never shorter.
	if gap := nacks[1].at.Sub(nacks[0].at); gap < time.Second {
		t.Errorf("the repeated NACK came %v after the first, want ≥ 1s", gap)
	}
	if gap := nacks[2].at.Sub(nacks[1].at); gap < 2*time.Second {
		t.Errorf("the third NACK came %v after the second, want ≥ 2s", gap)
	}

	setListener(t, cache, "v2")
	acked := func(s *server) bool {
		for _, r := range s.requests() {
			if r.req.GetVersionInfo() == "v2" && r.req.GetErrorDetail() == nil {
				return true
			}
		}
		return false
	}
	waitFor(t, "the ACK of v2", func() bool { return acked(srv) })

	// A new control plane: the first request of the new stream says v2.
	srv.g.Stop()
	srv2 := startServer(t, srv.addr, cachev3.NewSnapshotCache(true, cachev3.IDHash{}, nil))
	waitFor(t, "a request on the new stream", func() bool { return len(srv2.requests()) > 0 })
	if first := srv2.requests()[0].req; first.GetVersionInfo() != "v2" || first.GetResponseNonce() != "" || first.GetNode().GetId() != node {
		t.Errorf("first request after reconnecting = %v, want version v2, no nonce, the node", first)
	}
}
