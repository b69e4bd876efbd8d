package loadgen

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
)

// Report is one run as the loadgen command prints it.
type Report struct {
	Target string // what was tested: "ratelimit" or "authz"
	Label  string // free text naming the setup, e.g. the store; may be empty
	Result Result
	// Answers counts the answers by kind (OK, OVER_LIMIT, DENIED_401, …).
	Answers map[string]int64
	// ServerCPU is the CPU the server used during the run; 0 when not
	// measured. ClientCPU is the load generator's own.
	ServerCPU, ClientCPU time.Duration
	// LoginWorkers is the number of wrong-password login clients that ran
	// beside the measured run (LoginLoad), 0 for none; Logins counts their
	// answers during it by HTTP status ("401", "503") or "error".
	LoginWorkers int
	Logins       map[string]int64
}

// loginCount is the number of logins answered during the run.
func (r Report) loginCount() int64 {
	var n int64
	for _, v := range r.Logins {
		n += v
	}
	return n
}

// loginRate is loginCount per second of the run.
func (r Report) loginRate() float64 {
	if r.Result.Duration <= 0 {
		return 0
	}
	return float64(r.loginCount()) / r.Result.Duration.Seconds()
}

// noun names one request of the target.
func (r Report) noun() string {
	switch r.Target {
	case "ratelimit":
		return "decision"
	case "authz":
		return "check"
	}
	return "request"
}

// perRequest returns d per completed request in µs, 0 without requests.
func (r Report) perRequest(d time.Duration) float64 {
	if r.Result.Count == 0 {
		return 0
	}
	return float64(d) / float64(time.Microsecond) / float64(r.Result.Count)
}

// share returns n as a percentage of the completed requests.
func (r Report) share(n int64) float64 {
	if r.Result.Count == 0 {
		return 0
	}
	return 100 * float64(n) / float64(r.Result.Count)
}

// Summary is the one-line headline, e.g. "ratelimit memory closed c=64:
// 31234 decisions/s p50 1.8ms p99 4.1ms p99.9 7ms, server CPU 18.2
// µs/decision, OK 97.1%".
func (r Report) Summary() string {
	res := r.Result
	var b strings.Builder
	b.WriteString(r.Target)
	if r.Label != "" {
		b.WriteString(" " + r.Label)
	}
	fmt.Fprintf(&b, " %s", res.Options.Mode)
	if res.Options.Mode == Open {
		fmt.Fprintf(&b, " %.0f/s", res.Options.Rate)
	}
	fmt.Fprintf(&b, " c=%d: %.0f %ss/s p50 %s p99 %s p99.9 %s", res.Options.Concurrency, res.Rate, r.noun(),
		ms(res.Latency.P50), ms(res.Latency.P99), ms(res.Latency.P999))
	if r.ServerCPU > 0 {
		fmt.Fprintf(&b, ", server CPU %.1f µs/%s", r.perRequest(r.ServerCPU), r.noun())
	}
	fmt.Fprintf(&b, ", OK %.1f%%", r.share(r.Answers["OK"]))
	if n := res.ErrorCount(); n > 0 {
		fmt.Fprintf(&b, ", errors %d", n)
	}
	if res.Dropped > 0 {
		fmt.Fprintf(&b, ", dropped %d", res.Dropped)
	}
	return b.String()
}

// WriteText writes the summary and a block with every figure.
func (r Report) WriteText(w io.Writer) error {
	res := r.Result
	var b strings.Builder
	b.WriteString(r.Summary() + "\n")
	fmt.Fprintf(&b, "  requests  %d in %.2fs (%.0f/s), errors %d%s\n", res.Count, res.Duration.Seconds(), res.Rate,
		res.ErrorCount(), byName(errorNames(res.Errors), nil))
	l := res.Latency
	fmt.Fprintf(&b, "  latency   min %s mean %s p50 %s p90 %s p99 %s p99.9 %s max %s\n",
		ms(l.Min), ms(l.Mean), ms(l.P50), ms(l.P90), ms(l.P99), ms(l.P999), ms(l.Max))
	fmt.Fprintf(&b, "  answers  %s\n", byName(r.Answers, r.share))
	b.WriteString("  cpu       ")
	if r.ServerCPU > 0 {
		fmt.Fprintf(&b, "server %.1f µs/%s (%.2fs), ", r.perRequest(r.ServerCPU), r.noun(), r.ServerCPU.Seconds())
	} else {
		b.WriteString("server not measured (-server-pid), ")
	}
	fmt.Fprintf(&b, "loadgen %.1f µs/%s (%.2fs)\n", r.perRequest(r.ClientCPU), r.noun(), r.ClientCPU.Seconds())
	if r.LoginWorkers > 0 {
		fmt.Fprintf(&b, "  logins    %d wrong-password clients beside the run: %d answered (%.1f/s):%s\n",
			r.LoginWorkers, r.loginCount(), r.loginRate(), byName(r.Logins, nil))
	}
	if res.Options.Mode == Open {
		fmt.Fprintf(&b, "  schedule  %d intended at %.0f/s, %d late, %d dropped; send lag p50 %s p99 %s max %s\n",
			res.Intended, res.Options.Rate, res.Late, res.Dropped, ms(res.Lag.P50), ms(res.Lag.P99), ms(res.Lag.Max))
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// byName lists counts sorted by name, with a percentage when pct is set.
func byName(m map[string]int64, pct func(int64) float64) string {
	var b strings.Builder
	for _, k := range slices.Sorted(maps.Keys(m)) {
		fmt.Fprintf(&b, " %s %d", k, m[k])
		if pct != nil {
			fmt.Fprintf(&b, " (%.1f%%)", pct(m[k]))
		}
	}
	return b.String()
}

func errorNames(errs map[codes.Code]int64) map[string]int64 {
	m := make(map[string]int64, len(errs))
	for c, n := range errs {
		m[c.String()] = n
	}
	return m
}

// ms formats d in milliseconds with three significant digits, or in
// seconds from 1 s.
func ms(d time.Duration) string {
	if d >= time.Second {
		return fmt.Sprintf("%.3gs", d.Seconds())
	}
	return fmt.Sprintf("%.3gms", float64(d)/float64(time.Millisecond))
}

// jsonReport is the -json line: flat, so a shell script can pick fields
// with sed. Times are in ms, CPU in µs per request.
type jsonReport struct {
	Target       string           `json:"target"`
	Label        string           `json:"label"`
	Mode         Mode             `json:"mode"`
	Concurrency  int              `json:"concurrency"`
	TargetRate   float64          `json:"target_rate,omitempty"`
	Count        int64            `json:"count"`
	Errors       int64            `json:"errors"`
	ErrorsByCode map[string]int64 `json:"errors_by_code,omitempty"`
	DurationS    float64          `json:"duration_s"`
	Rate         float64          `json:"rate"`
	MinMS        float64          `json:"min_ms"`
	MeanMS       float64          `json:"mean_ms"`
	P50MS        float64          `json:"p50_ms"`
	P90MS        float64          `json:"p90_ms"`
	P99MS        float64          `json:"p99_ms"`
	P999MS       float64          `json:"p999_ms"`
	MaxMS        float64          `json:"max_ms"`
	OKPct        float64          `json:"ok_pct"`
	Answers      map[string]int64 `json:"answers"`
	ServerCPUUS  float64          `json:"server_cpu_us"` // per request; 0 when not measured
	ClientCPUUS  float64          `json:"client_cpu_us"` // per request
	Intended     int64            `json:"intended,omitempty"`
	Late         int64            `json:"late,omitempty"`
	Dropped      int64            `json:"dropped,omitempty"`
	LagP99MS     float64          `json:"lag_p99_ms,omitempty"`
	LagMaxMS     float64          `json:"lag_max_ms,omitempty"`
	LoginWorkers int              `json:"login_workers,omitempty"`
	LoginCount   int64            `json:"logins,omitempty"`
	LoginRate    float64          `json:"login_rate,omitempty"`
	LoginBusy    int64            `json:"login_503,omitempty"` // logins refused for a full hashing queue
}

// JSON returns the report as one line of JSON (no newline).
func (r Report) JSON() ([]byte, error) {
	res := r.Result
	toMS := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	answers := r.Answers
	if answers == nil {
		answers = map[string]int64{}
	}
	j := jsonReport{
		Target: r.Target, Label: r.Label, Mode: res.Options.Mode, Concurrency: res.Options.Concurrency,
		Count: res.Count, Errors: res.ErrorCount(), DurationS: res.Duration.Seconds(), Rate: res.Rate,
		MinMS: toMS(res.Latency.Min), MeanMS: toMS(res.Latency.Mean), P50MS: toMS(res.Latency.P50),
		P90MS: toMS(res.Latency.P90), P99MS: toMS(res.Latency.P99), P999MS: toMS(res.Latency.P999),
		MaxMS: toMS(res.Latency.Max), OKPct: r.share(answers["OK"]), Answers: answers,
		ServerCPUUS: r.perRequest(r.ServerCPU), ClientCPUUS: r.perRequest(r.ClientCPU),
	}
	if len(res.Errors) > 0 {
		j.ErrorsByCode = errorNames(res.Errors)
	}
	if res.Options.Mode == Open {
		j.TargetRate, j.Intended, j.Late, j.Dropped = res.Options.Rate, res.Intended, res.Late, res.Dropped
		j.LagP99MS, j.LagMaxMS = toMS(res.Lag.P99), toMS(res.Lag.Max)
	}
	if r.LoginWorkers > 0 {
		j.LoginWorkers, j.LoginCount, j.LoginRate, j.LoginBusy = r.LoginWorkers, r.loginCount(), r.loginRate(), r.Logins["503"]
	}
	b, err := json.Marshal(j)
	if err != nil {
		return nil, fmt.Errorf("report json: %w", err)
	}
	return b, nil
}
