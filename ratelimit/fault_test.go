package ratelimit

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	ratelimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/leakytokens/leaky/internal/testenv"
)

// grpcHealth asks the gRPC health service for service ("" is the server's
// overall status).
func grpcHealth(t *testing.T, addr, service string) healthpb.HealthCheckResponse_ServingStatus {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: service})
	if err != nil {
		t.Fatalf("health Check(%q): %v", service, err)
	}
	return resp.Status
}

// eventuallyHealth waits until /readyz answers code and gRPC health (the
// server's and the RateLimitService's) answers want, all in one poll: the
// two are published one after the other, so a single read of one right
// after the other flipped may still see the old state.
func eventuallyHealth(t *testing.T, svc *Service, code int, want healthpb.HealthCheckResponse_ServingStatus) {
	t.Helper()
	var got int
	var overall, rls healthpb.HealthCheckResponse_ServingStatus
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		got, _ = httpGet(t, "http://"+svc.HTTPAddr()+"/readyz")
		overall = grpcHealth(t, svc.GRPCAddr(), "")
		rls = grpcHealth(t, svc.GRPCAddr(), rlsv3.RateLimitService_ServiceDesc.ServiceName)
		if got == code && overall == want && rls == want {
			return
		}
	}
	t.Fatalf("after 30s: readyz %d, gRPC health %v (server) and %v (RateLimitService); want %d and %v", got, overall, rls, code, want)
}

// askTimed sends one request and reports the answer, the error and how long
// it took.
func (s *server) askTimed(domain string, hits uint32, kv string) (*rlsv3.RateLimitResponse, time.Duration, error) {
	start := time.Now()
	resp, err := s.client.ShouldRateLimit(context.Background(), &rlsv3.RateLimitRequest{Domain: domain, HitsAddend: hits, Descriptors: []*ratelimitv3.RateLimitDescriptor{desc(kv)}})
	return resp, time.Since(start), err
}

// The store's loss gets the policy's failure mode (deny here) within the
// deadline, readiness and gRPC health report it, and the service resumes by
// itself when Redis is back: killed, then hung.
func TestRedisFailureModeAndRecovery(t *testing.T) {
	rd := testenv.StartRedis(t)
	cfg := testConfig(t, "redis", "policy.yaml", "messaging.yaml")
	cfg.RedisURL = rd.URL
	cfg.RedisTimeout = DefaultConfig().RedisTimeout // the production deadline is under test
	s := start(t, cfg)
	user := "provider=openai,tier=free,user=fault"
	// With the 15 ms deadline one call on a loaded machine may get the
	// failure mode (deny) although Redis is up: wait for a decision.
	eventually(t, "a decision before the fault", func() bool {
		r, _, err := s.askTimed("leaky-tokens", 1, user)
		return err == nil && r.OverallCode == rlsv3.RateLimitResponse_OK
	})

	for _, fault := range []struct {
		name         string
		break_, heal func()
	}{
		{"killed", rd.Kill, func() {
			if err := rd.Restart(); err != nil {
				t.Fatalf("restart redis: %v", err)
			}
		}},
		{"hung", rd.Stop, rd.Cont},
	} {
		t.Run(fault.name, func(t *testing.T) {
			fault.break_()
			var took []time.Duration
			for i := 0; i < 21; i++ {
				r, d, err := s.askTimed("leaky-tokens", 1, user)
				if err != nil || r.OverallCode != rlsv3.RateLimitResponse_OVER_LIMIT {
					t.Fatalf("during the fault: %v %v, want OVER_LIMIT (failure_mode deny)", r.GetOverallCode(), err)
				}
				took = append(took, d)
				// Other domains answer UNAVAILABLE, as envoyproxy/ratelimit does.
				if _, _, err := s.askTimed("messaging", 1, "to_number=fault"); status.Code(err) != codes.Unavailable {
					t.Fatalf("messaging during the fault: %v, want Unavailable", err)
				}
			}
			// The store deadline is 15 ms. On a shared test machine a single
			// call may be descheduled, so judge the median, with a margin,
			// and every call against a hang (retries, dial back-offs).
			slices.Sort(took)
			if took[len(took)/2] > 100*time.Millisecond || took[len(took)-1] > time.Second {
				t.Errorf("answers during the fault: median %v, max %v; want the 15 ms deadline to hold (median ≤ 100 ms, max ≤ 1 s)", took[len(took)/2], took[len(took)-1])
			}
			eventuallyHealth(t, s.svc, 503, healthpb.HealthCheckResponse_NOT_SERVING)
			fault.heal()
			eventually(t, "decisions again", func() bool {
				r, _, err := s.askTimed("leaky-tokens", 1, user)
				return err == nil && r.OverallCode == rlsv3.RateLimitResponse_OK
			})
			eventuallyHealth(t, s.svc, 200, healthpb.HealthCheckResponse_SERVING)
		})
	}
	_, body := httpGet(t, "http://"+s.svc.HTTPAddr()+"/metrics")
	for _, want := range []string{`ratelimit_service_failure_mode_total{mode="deny"}`, `ratelimit_service_should_rate_limit_error{err_type=`} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
}

// On shutdown, health turns NOT_SERVING before the server stops, so Envoy's
// health checks drain traffic first; Run then returns cleanly.
func TestShutdownTurnsHealthNotServingFirst(t *testing.T) {
	cfg := testConfig(t, "memory", "policy.yaml")
	ctx, cancel := context.WithCancel(context.Background())
	svc, err := New(cfg, slog.New(slog.DiscardHandler), testStore(t, cfg))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- svc.Run(ctx) }()
	conn, err := grpc.NewClient(svc.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var watch healthpb.Health_WatchClient
	eventually(t, "a health watch", func() bool {
		watch, err = healthpb.NewHealthClient(conn).Watch(context.Background(), &healthpb.HealthCheckRequest{})
		return err == nil
	})
	for {
		st, err := watch.Recv()
		if err != nil {
			t.Fatalf("watch: %v", err)
		}
		if st.Status == healthpb.HealthCheckResponse_SERVING {
			break
		}
	}
	cancel()
	st, err := watch.Recv()
	if err != nil || st.Status != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Errorf("after shutdown began: %v %v, want NOT_SERVING", st.GetStatus(), err)
	}
	conn.Close() // an open Watch stream would hold the graceful stop for its whole grace
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run = %v, want nil", err)
		}
	case <-time.After(cfg.ShutdownGrace + 30*time.Second): // a loaded machine
		t.Fatal("Run did not return after shutdown")
	}
}

// Redis killed under concurrent load: every in-flight and later call gets
// an answer (the failure mode, deny), none an error or a hang, and the
// service decides again once Redis is back, without a restart.
func TestRedisKilledUnderLoad(t *testing.T) {
	rd := testenv.StartRedis(t)
	cfg := testConfig(t, "redis", "policy.yaml")
	cfg.RedisURL = rd.URL
	cfg.RedisTimeout = DefaultConfig().RedisTimeout // failure answers within the production deadline
	s := start(t, cfg)
	stop := make(chan struct{})
	var answered, denied, failed atomic.Int64
	var wg sync.WaitGroup
	for c := 0; c < 16; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			user := fmt.Sprintf("provider=openai,tier=free,user=load%d", c)
			for {
				select {
				case <-stop:
					return
				default:
				}
				r, _, err := s.askTimed("leaky-tokens", 1, user)
				switch {
				case err != nil:
					failed.Add(1)
				case r.OverallCode == rlsv3.RateLimitResponse_OVER_LIMIT:
					denied.Add(1)
				}
				answered.Add(1)
			}
		}()
	}
	eventually(t, "load", func() bool { return answered.Load() > 200 })
	rd.Kill()
	before := denied.Load()
	eventually(t, "the failure mode under load", func() bool { return denied.Load() > before+200 })
	if err := rd.Restart(); err != nil {
		t.Fatalf("restart redis: %v", err)
	}
	eventually(t, "decisions again", func() bool {
		r, _, err := s.askTimed("leaky-tokens", 1, "provider=openai,tier=free,user=after")
		return err == nil && r.OverallCode == rlsv3.RateLimitResponse_OK
	})
	close(stop)
	wg.Wait()
	if n := failed.Load(); n != 0 {
		t.Errorf("%d of %d calls failed with an error, want every one answered (deny)", n, answered.Load())
	}
}
