package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	ratelimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/leakytokens/leaky/internal/contract"
	"github.com/leakytokens/leaky/internal/testenv"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

// syncBuffer is a bytes.Buffer safe to write from a goroutine and read
// from the test.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func testEnv(stdout, stderr io.Writer, vars map[string]string) env {
	return env{
		getenv: func(k string) string { return vars[k] },
		stdout: stdout, stderr: stderr,
		logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
}

func TestHelpNamesEveryEnvironmentVariable(t *testing.T) {
	for _, cmd := range []string{"ratelimit", "authz", "controlplane", "gateway", "providers-stub", "dev", "rlcheck", "authcheck", "loadgen"} {
		t.Run(cmd, func(t *testing.T) {
			var out bytes.Buffer
			err := run(context.Background(), []string{cmd, "-h"}, testEnv(&out, &out, nil))
			if err == nil || !strings.Contains(err.Error(), "help requested") {
				t.Fatalf("run %s -h = %v, want flag.ErrHelp", cmd, err)
			}
			if !strings.Contains(out.String(), "[$LEAKY_") {
				t.Errorf("%s -h does not name environment variables:\n%s", cmd, out.String())
			}
		})
	}
}

func TestUnknownCommand(t *testing.T) {
	var out bytes.Buffer
	if err := run(context.Background(), []string{"frobnicate"}, testEnv(&out, &out, nil)); err != errUsage {
		t.Errorf("run frobnicate = %v, want errUsage", err)
	}
	if !strings.Contains(out.String(), "ratelimit") {
		t.Errorf("usage lacks the commands:\n%s", out.String())
	}
}

// `leaky dev` serves ratelimit and authz on embedded defaults at the gRPC
// addresses it prints, answering ShouldRateLimit and Check directly (the
// probes that stand in for Envoy), and prints no admin password it was
// given.
func TestDevServesTheGRPCAPIs(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	var stdout, stderr syncBuffer
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, devArgs(), testEnv(&stdout, &stderr, map[string]string{"LEAKY_ADMIN_PASSWORD": "dev-admin-password"}))
	}()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("dev: %v", err)
		}
	}()
	var rlAddr string
	re := regexp.MustCompile(`ratelimit\s+gRPC (127\.0\.0\.1:\d+)`)
	for deadline := time.Now().Add(60 * time.Second); rlAddr == "" && time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if m := re.FindStringSubmatch(stdout.String()); m != nil {
			rlAddr = m[1]
		}
	}
	if rlAddr == "" {
		t.Fatalf("no walk-through printed; stdout:\n%s\nstderr:\n%s", stdout.String(), stderr.String())
	}
	if strings.Contains(stdout.String(), "dev-admin-password") {
		t.Error("the walk-through prints an admin password that was given, not generated")
	}
	var out bytes.Buffer
	if err := run(ctx, []string{"rlcheck", "-addr", rlAddr, "-d", "provider=openai,tier=free,user=alice", "-hits", "100"}, testEnv(&out, &out, nil)); err != nil {
		t.Fatalf("rlcheck: %v", err)
	}
	if !strings.Contains(out.String(), `"overallCode": "OK"`) || !strings.Contains(out.String(), `"limitRemaining": 3900`) {
		t.Errorf("rlcheck answer:\n%s", out.String())
	}
	out.Reset()
	for range 2 {
		out.Reset()
		if err := run(ctx, []string{"rlcheck", "-addr", rlAddr, "-d", "provider=openai,tier=free,user=bob", "-hits", "4000"}, testEnv(&out, &out, nil)); err != nil {
			t.Fatalf("rlcheck: %v", err)
		}
	}
	if !strings.Contains(out.String(), `body: {"error":"rate_limited","scope":"user","limit":4000,"remaining":0,"retry_after_seconds":100}`) {
		t.Errorf("second whole-bucket request: want OVER_LIMIT with the JSON body:\n%s", out.String())
	}
	azAddr := regexp.MustCompile(`authz\s+gRPC (127\.0\.0\.1:\d+)`).FindStringSubmatch(stdout.String())
	if azAddr == nil {
		t.Fatalf("walk-through lacks authz's gRPC address:\n%s", stdout.String())
	}
	out.Reset()
	if err := run(ctx, []string{"authcheck", "-addr", azAddr[1], "-timeout", "30s", "-H", "authorization: Bearer not-a-token"}, testEnv(&out, &out, nil)); err != nil {
		t.Fatalf("authcheck: %v", err)
	}
	if !strings.Contains(out.String(), "deniedResponse") {
		t.Errorf("authcheck with a bad token:\n%s", out.String())
	}
}

// buildLeaky builds the binary once for this test.
func buildLeaky(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "leaky")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// startProcess runs `leaky ratelimit` with env and returns its gRPC address,
// read from its start log line.
func startProcess(t *testing.T, bin string, env []string) string {
	t.Helper()
	cmd := exec.Command(bin, "ratelimit", "-grpc-addr", "127.0.0.1:0", "-http-addr", "127.0.0.1:0")
	cmd.Env = append(os.Environ(), env...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		_ = cmd.Wait()
	})
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			var line struct {
				Msg     string `json:"msg"`
				Service string `json:"service"`
				GRPC    string `json:"grpc_addr"`
			}
			if json.Unmarshal(sc.Bytes(), &line) == nil && line.Msg == "serving" && line.Service == "ratelimit" {
				addr <- line.GRPC
			}
		}
	}()
	select {
	case a := <-addr:
		return a
	case <-time.After(60 * time.Second): // a loaded machine
		t.Fatal("leaky ratelimit did not start within 60s")
		return ""
	}
}

// Two `leaky ratelimit` processes sharing one Redis, or one Redis Cluster
// (-redis-url redis+cluster://…), configured through LEAKY_* variables,
// admit exactly a bucket's capacity together under 64 concurrent callers.
func TestTwoProcessesShareRedisExactly(t *testing.T) {
	bin := buildLeaky(t)
	policy, _ := filepath.Abs("testdata/policy.yaml")
	for _, backend := range []struct {
		name string
		url  func(testing.TB) string
	}{{"redis", testenv.RedisURL}, {"redis cluster", testenv.RedisClusterURL}} {
		t.Run(backend.name, func(t *testing.T) {
			env := []string{
				"LEAKY_STORE=redis", "LEAKY_REDIS_URL=" + backend.url(t), "LEAKY_REDIS_PREFIX=" + testenv.Prefix(t),
				"LEAKY_REDIS_TIMEOUT=5s", "LEAKY_CONFIG=" + policy,
			}
			twoProcessesExactly(t, bin, env)
		})
	}
}

// twoProcessesExactly starts two processes of bin with env and hammers one
// user's bucket (capacity 1000) through both.
func twoProcessesExactly(t *testing.T, bin string, env []string) {
	var clients []rlsv3.RateLimitServiceClient
	for range 2 {
		conn, err := grpc.NewClient(startProcess(t, bin, env), grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		clients = append(clients, rlsv3.NewRateLimitServiceClient(conn))
	}
	var admitted atomic.Int64
	var wg sync.WaitGroup
	for c := range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 40 {
				resp, err := clients[c%2].ShouldRateLimit(context.Background(), &rlsv3.RateLimitRequest{
					Domain: contract.Domain, HitsAddend: 1,
					Descriptors: []*ratelimitv3.RateLimitDescriptor{{Entries: []*ratelimitv3.RateLimitDescriptor_Entry{
						{Key: contract.KeyProvider, Value: "openai"}, {Key: contract.KeyTier, Value: "free"}, {Key: contract.KeyUser, Value: "hot"},
					}}},
				})
				if err != nil {
					t.Errorf("ShouldRateLimit: %v", err)
					return
				}
				if resp.OverallCode == rlsv3.RateLimitResponse_OK {
					admitted.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	if got := admitted.Load(); got != 1000 {
		t.Errorf("two processes admitted %d of 2560, want exactly the capacity 1000", got)
	}
}
