package loadgen

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"google.golang.org/grpc/codes"
)

func sampleReport(mode Mode) Report {
	ms := func(f float64) time.Duration { return time.Duration(f * float64(time.Millisecond)) }
	r := Report{
		Target: "ratelimit",
		Label:  "memory",
		Result: Result{
			Options:  Options{Mode: mode, Concurrency: 64, Rate: 8000, Duration: 10 * time.Second},
			Count:    312340,
			Errors:   map[codes.Code]int64{codes.Unavailable: 2},
			Duration: 10 * time.Second,
			Rate:     31234,
			Latency:  Latency{Min: ms(0.21), Mean: ms(2), P50: ms(1.8), P90: ms(3), P99: ms(4.1), P999: ms(7), Max: ms(1500)},
		},
		Answers:   map[string]int64{"OK": 303284, "OVER_LIMIT": 9054},
		ServerCPU: 5684588 * time.Microsecond, // 18.2 µs × 312340
		ClientCPU: 3123400 * time.Microsecond,
	}
	if mode == Open {
		r.Result.Intended, r.Result.Late, r.Result.Dropped = 80000, 12, 3
		r.Result.Lag = Latency{P50: ms(0.05), P99: ms(0.9), Max: ms(20)}
	}
	return r
}

func TestReportSummary(t *testing.T) {
	tests := []struct {
		name string
		in   Report
		want string
	}{
		{"closed", sampleReport(Closed),
			"ratelimit memory closed c=64: 31234 decisions/s p50 1.8ms p99 4.1ms p99.9 7ms, server CPU 18.2 µs/decision, OK 97.1%, errors 2"},
		{"open", sampleReport(Open),
			"ratelimit memory open 8000/s c=64: 31234 decisions/s p50 1.8ms p99 4.1ms p99.9 7ms, server CPU 18.2 µs/decision, OK 97.1%, errors 2, dropped 3"},
		{"authz without server pid or requests", Report{Target: "authz", Result: Result{Options: Options{Mode: Closed, Concurrency: 1}}},
			"authz closed c=1: 0 checks/s p50 0ms p99 0ms p99.9 0ms, OK 0.0%"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.in.Summary(); got != tt.want {
				t.Errorf("Summary() = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestReportWriteText(t *testing.T) {
	var b strings.Builder
	if err := sampleReport(Open).WriteText(&b); err != nil {
		t.Fatal(err)
	}
	want := `ratelimit memory open 8000/s c=64: 31234 decisions/s p50 1.8ms p99 4.1ms p99.9 7ms, server CPU 18.2 µs/decision, OK 97.1%, errors 2, dropped 3
  requests  312340 in 10.00s (31234/s), errors 2 Unavailable 2
  latency   min 0.21ms mean 2ms p50 1.8ms p90 3ms p99 4.1ms p99.9 7ms max 1.5s
  answers   OK 303284 (97.1%) OVER_LIMIT 9054 (2.9%)
  cpu       server 18.2 µs/decision (5.68s), loadgen 10.0 µs/decision (3.12s)
  schedule  80000 intended at 8000/s, 12 late, 3 dropped; send lag p50 0.05ms p99 0.9ms max 20ms
`
	if diff := cmp.Diff(want, b.String()); diff != "" {
		t.Errorf("WriteText mismatch (-want +got):\n%s", diff)
	}
}

func TestReportJSON(t *testing.T) {
	b, err := sampleReport(Open).JSON()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(b), "\n") {
		t.Errorf("JSON() = %s, want one line", b)
	}
	var got map[string]any
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatalf("JSON() is not JSON: %v", err)
	}
	want := map[string]any{
		"target": "ratelimit", "label": "memory", "mode": "open", "concurrency": 64.0, "target_rate": 8000.0,
		"count": 312340.0, "errors": 2.0, "errors_by_code": map[string]any{"Unavailable": 2.0},
		"duration_s": 10.0, "rate": 31234.0,
		"min_ms": 0.21, "mean_ms": 2.0, "p50_ms": 1.8, "p90_ms": 3.0, "p99_ms": 4.1, "p999_ms": 7.0, "max_ms": 1500.0,
		"ok_pct": 100 * 303284 / 312340.0, "answers": map[string]any{"OK": 303284.0, "OVER_LIMIT": 9054.0},
		"server_cpu_us": 5684588 / 312340.0, "client_cpu_us": 10.0,
		"intended": 80000.0, "late": 12.0, "dropped": 3.0, "lag_p99_ms": 0.9, "lag_max_ms": 20.0,
	}
	if diff := cmp.Diff(want, got, cmpopts.EquateApprox(1e-6, 0)); diff != "" {
		t.Errorf("JSON() mismatch (-want +got):\n%s", diff)
	}
}
