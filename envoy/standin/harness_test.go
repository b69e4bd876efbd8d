package standin

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	discoverygrpc "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"google.golang.org/grpc"

	"github.com/leakytokens/leaky/controlplane/model"
)

const testNode = "standin-test"

// waitBound is how long a poll waits for what must happen: generous, for a
// loaded machine.
const waitBound = 60 * time.Second

// xdsServer is a go-control-plane ADS server with a snapshot cache on
// 127.0.0.1, recording every request it receives.
type xdsServer struct {
	t     *testing.T
	cache cachev3.SnapshotCache
	addr  string

	mu       sync.Mutex
	grpc     *grpc.Server
	requests []*discoverygrpc.DiscoveryRequest
}

func newXDSServer(t *testing.T) *xdsServer {
	s := &xdsServer{t: t, cache: newCache()}
	s.start("127.0.0.1:0")
	t.Cleanup(s.stop)
	return s
}

// newCache is an ADS snapshot cache keyed by node id.
func newCache() cachev3.SnapshotCache { return cachev3.NewSnapshotCache(true, cachev3.IDHash{}, nil) }

// start serves on addr (a fixed one when restarting).
func (s *xdsServer) start(addr string) {
	var lis net.Listener
	var err error
	for deadline := time.Now().Add(waitBound); ; time.Sleep(50 * time.Millisecond) {
		if lis, err = net.Listen("tcp", addr); err == nil || time.Now().After(deadline) {
			break
		}
	}
	if err != nil {
		s.t.Fatal(err)
	}
	cb := serverv3.CallbackFuncs{StreamRequestFunc: func(_ int64, r *discoverygrpc.DiscoveryRequest) error {
		s.mu.Lock()
		s.requests = append(s.requests, r)
		s.mu.Unlock()
		return nil
	}}
	srv := serverv3.NewServer(context.Background(), s.cache, cb)
	g := grpc.NewServer()
	discoverygrpc.RegisterAggregatedDiscoveryServiceServer(g, srv)
	s.mu.Lock()
	s.grpc, s.addr = g, lis.Addr().String()
	s.mu.Unlock()
	go g.Serve(lis)
}

func (s *xdsServer) stop() {
	s.mu.Lock()
	g := s.grpc
	s.grpc = nil
	s.mu.Unlock()
	if g != nil {
		g.Stop()
	}
}

// push sets the snapshot version with f's resources, changed by edit.
func (s *xdsServer) push(version string, f fixture, edit func(map[string][]types.Resource)) {
	s.t.Helper()
	res := f.resources(s.t)
	if edit != nil {
		edit(res)
	}
	snap, err := cachev3.NewSnapshot(version, res)
	if err != nil {
		s.t.Fatal(err)
	}
	if err := snap.Consistent(); err != nil {
		s.t.Fatal(err)
	}
	if err := s.cache.SetSnapshot(context.Background(), testNode, snap); err != nil {
		s.t.Fatal(err)
	}
}

// nacks are the NACKs received so far for typeURL, their version_info and
// error messages.
func (s *xdsServer) nacks(typeURL string) []*discoverygrpc.DiscoveryRequest {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []*discoverygrpc.DiscoveryRequest
	for _, r := range s.requests {
		if r.GetTypeUrl() == typeURL && r.GetErrorDetail() != nil {
			out = append(out, r)
		}
	}
	return out
}

// harness is a gateway connected to an xDS server, with fake ext_authz and
// ratelimit services whose addresses the fixture's clusters point at.
type harness struct {
	t      *testing.T
	xds    *xdsServer
	authz  *fakeAuthz
	rls    *fakeRLS
	proc   *fakeProc // the ExternalProcessor beside rls
	gw     *Gateway
	base   string // http://listener
	admin  string // http://admin
	fix    fixture
	client *http.Client
}

func newHarness(t *testing.T, f fixture) *harness { return newHarnessWith(t, f, nil) }

// newHarnessWith is newHarness with tweak applied to the gateway between
// New and Run (nil: none).
func newHarnessWith(t *testing.T, f fixture, tweak func(*Gateway)) *harness {
	proc := &fakeProc{answer: continueAll}
	h := &harness{t: t, xds: newXDSServer(t), authz: newFakeAuthz(t), rls: newFakeRLS(t, proc), proc: proc, client: &http.Client{Timeout: waitBound}}
	if _, ok := f.endpoints[model.ServiceAuthzGRPC]; !ok {
		f.endpoints[model.ServiceAuthzGRPC] = []string{h.authz.addr}
	}
	if _, ok := f.endpoints[model.ServiceRatelimitGRPC]; !ok {
		f.endpoints[model.ServiceRatelimitGRPC] = []string{h.rls.addr}
	}
	h.fix = f
	h.gw = startGateway(t, h.xds.addr, tweak)
	h.base, h.admin = "http://"+h.gw.Addr(), "http://"+h.gw.AdminAddr()
	return h
}

func startGateway(t *testing.T, xdsAddr string, tweak func(*Gateway)) *Gateway {
	cfg := Config{
		Listen: "127.0.0.1:0", XDSAddr: xdsAddr, AdminAddr: "127.0.0.1:0", NodeID: testNode,
		MinBackoff: 50 * time.Millisecond, MaxBackoff: 500 * time.Millisecond, ShutdownGrace: 5 * time.Second,
	}
	gw, err := New(cfg, slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug})))
	if err != nil {
		t.Fatal(err)
	}
	if tweak != nil {
		tweak(gw)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- gw.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run = %v", err)
		}
	})
	return gw
}

// pushAndWait pushes f (edited) as version and waits until the gateway
// applied it.
func (h *harness) pushAndWait(version string, f fixture, edit func(map[string][]types.Resource)) {
	h.t.Helper()
	h.xds.push(version, f, edit)
	h.waitFor(fmt.Sprintf("configuration %s applied", version), func() bool {
		return h.appliedVersion("listener") == version && h.appliedVersion("cluster") == version &&
			h.appliedVersion("endpoint") == version && h.appliedVersion("route") == version
	})
}

// appliedVersion is the version of one type in /config_dump ("" before
// any).
func (h *harness) appliedVersion(kind string) string {
	var dump struct {
		Versions map[string]string `json:"versions"`
	}
	resp, err := h.client.Get(h.admin + "/config_dump")
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(&dump); err != nil {
		return ""
	}
	return dump.Versions[kind]
}

func (h *harness) waitFor(what string, cond func() bool) {
	h.t.Helper()
	deadline := time.Now().Add(waitBound)
	for !cond() {
		if time.Now().After(deadline) {
			h.t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// do sends one request through the gateway and reads the whole answer.
func (h *harness) do(method, path string, header http.Header, body string) (*http.Response, string) {
	h.t.Helper()
	req, err := http.NewRequest(method, h.base+path, strings.NewReader(body))
	if err != nil {
		h.t.Fatal(err)
	}
	if body == "" {
		req.Body = nil
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := h.client.Do(req)
	if err != nil {
		h.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		h.t.Fatalf("%s %s: reading the body: %v", method, path, err)
	}
	return resp, string(b)
}

// raw sends request exactly as written on a connection of its own and
// reads the answer, waiting up to waitBound for it.
func (h *harness) raw(request string) (*http.Response, string) {
	h.t.Helper()
	conn, err := net.Dial("tcp", h.gw.Addr())
	if err != nil {
		h.t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(waitBound))
	if _, err := io.WriteString(conn, request); err != nil {
		h.t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		h.t.Fatalf("reading the answer to %q: %v", request, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}
