package main

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/leakytokens/leaky/ratelimit/ledger"
)

// The metering's end-to-end helpers: the policy, the settlement counter,
// the usage a response carries, the provider's own usage and the events on
// the embedded broker.

// meteringPolicy is e2ePolicy with the gateway's wait for each of the
// metering's answers at its bound (10 s): at the default 200 ms a loaded
// machine would carry on without the processor (failure mode allow) and
// leave the reservation to expire at its estimate.
func meteringPolicy(t *testing.T) string {
	t.Helper()
	pol := strings.Replace(e2ePolicy, "  retries: 2\n", "  retries: 2\n  metering_timeout: 10s\n", 1)
	if pol == e2ePolicy {
		t.Fatal("e2ePolicy has no gateway retries line to add metering_timeout after")
	}
	return pol
}

func itoa(n int) string { return strconv.Itoa(n) }

// meterOutcomes are every outcome of ratelimit_meter_settles_total.
var meterOutcomes = []string{"usage", "estimate", "aborted", "error", "unknown", "failed", "expire"}

// meterSettles is ratelimit_meter_settles_total by outcome.
func (s *stack) meterSettles() map[string]float64 {
	s.t.Helper()
	url := "http://" + s.d.rl.HTTPAddr() + "/metrics"
	out := make(map[string]float64, len(meterOutcomes))
	for _, o := range meterOutcomes {
		out[o] = s.metric(url, "ratelimit_meter_settles_total", map[string]string{"outcome": o})
	}
	return out
}

// waitSettled waits until the metering has settled one more reservation
// than before counted, and returns that settlement's outcome; more than
// one fails the test.
func (s *stack) waitSettled(before map[string]float64) string {
	s.t.Helper()
	var outcome string
	s.waitFor("the metering to settle the call", func() (bool, string) {
		var n float64
		for o, v := range s.meterSettles() {
			if d := v - before[o]; d > 0 {
				n, outcome = n+d, o
			}
		}
		if n > 1 {
			s.t.Fatalf("%v settlements for one call", n)
		}
		return n == 1, "no settlement yet"
	})
	return outcome
}

// admittedRemaining is the first figure of the answer's
// x-ratelimit-remaining: what the bucket with the least left had once the
// request's estimate was reserved.
func admittedRemaining(t *testing.T, a answer) int64 {
	t.Helper()
	first, _, _ := strings.Cut(a.header.Get("X-Ratelimit-Remaining"), ",")
	n, err := strconv.ParseInt(strings.TrimSpace(first), 10, 64)
	if err != nil {
		t.Fatalf("x-ratelimit-remaining %q: %v", a.header.Get("X-Ratelimit-Remaining"), err)
	}
	return n
}

// usageDoc is where a JSON response or a stream's event carries the usage.
type usageDoc struct {
	Usage *struct {
		Total int64 `json:"total_tokens"`
	} `json:"usage"`
	UsageMetadata *struct {
		Total int64 `json:"totalTokenCount"`
	} `json:"usageMetadata"`
}

func (d usageDoc) total() int64 {
	switch {
	case d.Usage != nil:
		return d.Usage.Total
	case d.UsageMetadata != nil:
		return d.UsageMetadata.Total
	}
	return 0
}

// readUsage is the usage a response body carries (JSON, or the last one of
// an SSE stream; 0 = none) and whether the stream's last event is
// data: [DONE].
func readUsage(body string) (usage int64, done bool) {
	if !strings.HasPrefix(body, "data:") {
		var d usageDoc
		if json.Unmarshal([]byte(body), &d) == nil {
			usage = d.total()
		}
		return usage, false
	}
	sc := bufio.NewScanner(strings.NewReader(body))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		data, ok := strings.CutPrefix(sc.Text(), "data:")
		if !ok {
			continue
		}
		data = strings.TrimSpace(data)
		done = data == "[DONE]"
		var d usageDoc
		if !done && json.Unmarshal([]byte(data), &d) == nil && d.total() != 0 {
			usage = d.total()
		}
	}
	return usage, done
}

// providerUsage is the usage the provider's stub reports, called directly,
// for the body a client sent through the gateway to path: an OpenAI stream
// asks for its usage, as the metering makes it do. The stub answers a
// request the same every time.
func (s *stack) providerUsage(path, body string) int64 {
	s.t.Helper()
	provider := providerOfPath(path)
	var doc map[string]any
	if err := json.Unmarshal([]byte(body), &doc); err != nil {
		s.t.Fatal(err)
	}
	if doc["stream"] == true {
		doc["stream_options"] = map[string]any{"include_usage": true}
	}
	url := "http://" + s.d.stub.Addrs()[provider] + strings.TrimPrefix(path, "/"+provider)
	a := s.do(http.MethodPost, url, nil, jsonBody(s.t, doc))
	usage, _ := readUsage(a.body)
	if a.status != http.StatusOK || usage <= 0 {
		s.t.Fatalf("the %s stub directly: want 200 with a usage, got %s", provider, a)
	}
	return usage
}

// meteredEvents reads topic token-usage on the stack's embedded broker,
// from its start, with franz-go's client until it has found n
// reservation-settled events of kind metered for user (more fail the
// test), and returns their actual.
func (s *stack) meteredEvents(user string, n int) []int64 {
	s.t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(s.d.kafka), kgo.ConsumeTopics("token-usage"),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		s.t.Fatal(err)
	}
	defer cl.Close()
	var got []int64
	s.waitFor("the reservation-settled events on token-usage", func() (bool, string) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		fetches := cl.PollFetches(ctx)
		fetches.EachRecord(func(r *kgo.Record) {
			var ev struct {
				Type   string `json:"type"`
				Kind   string `json:"kind"`
				UserID string `json:"userId"`
				Actual int64  `json:"actual"`
			}
			if err := json.Unmarshal(r.Value, &ev); err != nil {
				s.t.Errorf("a record that is no event: %v: %s", err, r.Value)
				return
			}
			if ev.UserID != user || ev.Type != ledger.TypeReservationSettled {
				return
			}
			if h := header(r, "event-type"); h != ledger.TypeReservationSettled || ev.Kind != string(ledger.KindMetered) {
				s.t.Errorf("an event of %s: event-type header %q, kind %q: %s", user, h, ev.Kind, r.Value)
			}
			got = append(got, ev.Actual)
		})
		return len(got) >= n, strconv.Itoa(len(got)) + " found, want " + strconv.Itoa(n)
	})
	if len(got) > n {
		s.t.Errorf("%d reservation-settled events for %s, want %d", len(got), user, n)
	}
	return got
}

// header is the value of a record's header name ("" without one).
func header(r *kgo.Record, name string) string {
	for _, h := range r.Headers {
		if h.Key == name {
			return string(h.Value)
		}
	}
	return ""
}

// doCut is do for a response the upstream may cut: what was read before
// the body ended early is the answer's body, and cut says it ended so.
func (s *stack) doCut(method, url string, header map[string]string, body string) (a answer, cut bool) {
	s.t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		s.t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = []string{v}
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := s.client.Do(req)
	if err != nil {
		s.t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return answer{resp.StatusCode, resp.Header, string(b)}, err != nil
}

// streamedText is the bytes of generated text in the complete events of
// an SSE body: OpenAI's delta contents and Gemini's candidates' parts.
func streamedText(body string) int64 {
	var n int64
	for _, ev := range strings.SplitAfter(body, "\n\n") {
		data, ok := strings.CutPrefix(ev, "data:")
		if !ok || !strings.HasSuffix(ev, "\n\n") {
			continue
		}
		var d struct {
			Choices []struct {
				Delta struct {
					Content string `json:"content"`
				} `json:"delta"`
			} `json:"choices"`
			Candidates []struct {
				Content struct {
					Parts []struct {
						Text string `json:"text"`
					} `json:"parts"`
				} `json:"content"`
			} `json:"candidates"`
		}
		if json.Unmarshal([]byte(strings.TrimSpace(data)), &d) != nil {
			continue
		}
		for _, c := range d.Choices {
			n += int64(len(c.Delta.Content))
		}
		for _, c := range d.Candidates {
			for _, p := range c.Content.Parts {
				n += int64(len(p.Text))
			}
		}
	}
	return n
}
