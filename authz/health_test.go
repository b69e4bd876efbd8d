package authz

import (
	"context"
	"errors"
	"io"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/leakytokens/leaky/authz/store"
)

// pingStore is a memory store whose Ping fails while down is set.
type pingStore struct {
	store.Store
	down atomic.Bool
}

func (p *pingStore) Ping(ctx context.Context) error {
	if p.down.Load() {
		return errors.New("store down")
	}
	return p.Store.Ping(ctx)
}

// gRPC health and /readyz follow the store: NOT_SERVING and 503 while its
// Ping fails, SERVING and 200 again once it answers, without a restart.
func TestHealthFollowsStore(t *testing.T) {
	st := &pingStore{Store: store.NewMemory()}
	ts := startService(t, st, func(c *Config) { c.ReadinessInterval = 20 * time.Millisecond })
	conn, err := grpc.NewClient(ts.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	health := func(service string) healthpb.HealthCheckResponse_ServingStatus {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: service})
		if err != nil {
			t.Fatalf("health Check(%q): %v", service, err)
		}
		return resp.Status
	}
	for _, step := range []struct {
		name      string
		down      bool
		want      healthpb.HealthCheckResponse_ServingStatus
		wantReady int
	}{
		{"store up", false, healthpb.HealthCheckResponse_SERVING, http.StatusOK},
		{"store down", true, healthpb.HealthCheckResponse_NOT_SERVING, http.StatusServiceUnavailable},
		{"store back", false, healthpb.HealthCheckResponse_SERVING, http.StatusOK},
	} {
		st.down.Store(step.down)
		deadline := time.Now().Add(10 * time.Second)
		for {
			code, _ := ts.ready(t)
			if code == step.wantReady && health("") == step.want && health(authv3.Authorization_ServiceDesc.ServiceName) == step.want {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: readyz %d, health %v within 10s, want %d and %v", step.name, code, health(""), step.wantReady, step.want)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	if _, body := ts.ready(t); body != `{"status":"ok"}`+"\n" {
		t.Errorf("readyz body when ready = %q", body)
	}
}

func (ts *testService) ready(t *testing.T) (int, string) {
	t.Helper()
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(ts.base + "/readyz")
	if err != nil {
		t.Fatalf("readyz: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}
