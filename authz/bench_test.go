package authz

import (
	"context"
	"runtime"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
)

// benchConcurrency is the number of concurrent callers (DESIGN §8).
const benchConcurrency = 64

func BenchmarkCheckJWT(b *testing.B) {
	ts := startService(b, nil, nil)
	u := ts.register(b, "bench")
	benchRun(b, ts.client, map[string]string{"authorization": "Bearer " + u.Token})
}

func BenchmarkCheckAPIKeyCached(b *testing.B) {
	ts := startService(b, nil, func(c *Config) { c.APIKeyCacheTTL = time.Hour })
	u := ts.register(b, "bench")
	key := ts.newKey(b, u.Token, nil)
	benchRun(b, ts.client, map[string]string{"x-api-key": key.APIKey})
}

// benchRun runs Check over one loopback gRPC connection with 64 concurrent
// callers and reports checks/s and the p50 and p99 latency.
func benchRun(b *testing.B, client authv3.AuthorizationClient, headers map[string]string) {
	req := &authv3.CheckRequest{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{
		Http: &authv3.AttributeContext_HttpRequest{Method: "POST", Path: "/openai/v1/chat/completions", Headers: headers,
			Body: `{"model":"gpt-4o","messages":[{"role":"user","content":"hello there"}],"max_tokens":64}`},
	}}}
	var mu sync.Mutex
	var all []time.Duration
	b.SetParallelism(max(1, benchConcurrency/runtime.GOMAXPROCS(0)))
	b.ResetTimer()
	cpu0 := cpuTime()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		lat := make([]time.Duration, 0, 1024)
		for pb.Next() {
			t0 := time.Now()
			resp, err := client.Check(context.Background(), req)
			lat = append(lat, time.Since(t0))
			if err != nil || resp.GetOkResponse() == nil {
				b.Errorf("Check = %v, %v", resp, err)
				return
			}
		}
		mu.Lock()
		all = append(all, lat...)
		mu.Unlock()
	})
	el := time.Since(start)
	cpu := cpuTime() - cpu0
	b.StopTimer()
	if len(all) == 0 {
		return
	}
	slices.Sort(all)
	b.ReportMetric(float64(len(all))/el.Seconds(), "checks/s")
	b.ReportMetric(float64(all[len(all)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(all[len(all)*99/100].Microseconds()), "p99-µs")
	// Client and server share the process: this is the CPU of both sides.
	b.ReportMetric(float64(cpu.Microseconds())/float64(len(all)), "cpu-µs/check")
}

// cpuTime is the process's user plus system CPU time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkCheckHandler measures the Check handler alone, without gRPC:
// the service's own cost per decision.
func BenchmarkCheckHandler(b *testing.B) {
	ts := startService(b, nil, func(c *Config) { c.APIKeyCacheTTL = time.Hour })
	u := ts.register(b, "bench")
	key := ts.newKey(b, u.Token, nil)
	cs := ts.checks
	for name, h := range map[string]map[string]string{
		"jwt": {"authorization": "Bearer " + u.Token}, "api_key": {"x-api-key": key.APIKey},
	} {
		req := &authv3.CheckRequest{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{
			Http: &authv3.AttributeContext_HttpRequest{Method: "POST", Path: "/openai/v1/chat/completions", Headers: h,
				Body: `{"model":"gpt-4o","messages":[{"role":"user","content":"hello there"}],"max_tokens":64}`},
		}}}
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if resp, _ := cs.Check(context.Background(), req); resp.GetOkResponse() == nil {
					b.Fatal(resp)
				}
			}
		})
	}
}
