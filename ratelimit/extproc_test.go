package ratelimit

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"

	ratelimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/leakytokens/leaky/internal/estimate"
	"github.com/leakytokens/leaky/ratelimit/ledger"
)

const (
	chatPath   = "/openai/v1/chat/completions"
	chatBody   = `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say hello to my friend"}]}`
	streamBody = `{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"Say hello to my friend"}]}`
)

// startExchange reserves estimate tokens for user under id and sends the
// request's headers and body.
func startExchange(t *testing.T, ctx context.Context, s *server, id, user, path, body string, est int64) *exchangeClient {
	t.Helper()
	reserveAs(t, s, id, uint64(est), "provider=openai,tier=free,user="+user)
	e := openExchange(t, ctx, meterClient(t, s))
	e.send(reqHeaders(headers(false, ":method", "POST", ":path", path, "x-request-id", id,
		"x-leaky-provider", "openai", "x-leaky-estimate", fmt.Sprint(est), "content-length", fmt.Sprint(len(body)))))
	e.send(reqBody(body))
	return e
}

// recordSettlements makes s's reservations hand their settlements to the
// test; the function returned lists them so far.
func recordSettlements(s *server) func() []Settlement {
	var mu sync.Mutex
	var settled []Settlement
	s.svc.Reservations().SetRecorder(func(_ context.Context, st Settlement) {
		mu.Lock()
		defer mu.Unlock()
		settled = append(settled, st)
	})
	return func() []Settlement {
		mu.Lock()
		defer mu.Unlock()
		return append([]Settlement(nil), settled...)
	}
}

func userDesc(u string) string { return "provider=openai,tier=free,user=" + u }

func TestMeterJSONSettlesAtUsage(t *testing.T) {
	for _, kind := range []string{"memory", "redis"} {
		t.Run(kind, func(t *testing.T) {
			s := start(t, testConfig(t, kind, "policy.yaml"))
			recorded := recordSettlements(s)
			e := startExchange(t, context.Background(), s, "req-json", "jay", chatPath, chatBody, 300)
			if got := remaining(t, s, userDesc("jay")); got != 700 {
				t.Fatalf("remaining after the reservation = %d, want 700", got)
			}
			e.send(respHeaders(headers(false, ":status", "200", "content-type", "application/json")))
			resp := `{"id":"x","choices":[{"message":{"content":"Hello!"}}],"usage":{"prompt_tokens":9,"completion_tokens":3,"total_tokens":12}}`
			e.streamResponse(resp, 40)
			e.close()
			if e.client.String() != resp {
				t.Errorf("client got %q", e.client.String())
			}
			if got := remaining(t, s, userDesc("jay")); got != 988 {
				t.Errorf("remaining after settling at 12 = %d, want 988", got)
			}
			settled := recorded()
			if len(settled) != 1 {
				t.Fatalf("%d settlements recorded, want 1", len(settled))
			}
			want := Settlement{ID: "req-json", Kind: ledger.KindMetered, Owner: Owner{UserID: "jay", Tier: "free", Provider: "openai"}, Estimate: 300, Actual: 12}
			got := settled[0]
			got.At = want.At
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("settlement (-want +got):\n%s", diff)
			}
			if _, body := httpGet(t, "http://"+s.svc.HTTPAddr()+"/metrics"); !strings.Contains(body, `ratelimit_meter_settles_total{outcome="usage"} 1`) {
				t.Error("metrics lack the usage settlement")
			}
		})
	}
}

func TestMeterOpenAIStreamForcesAndStripsUsage(t *testing.T) {
	s := start(t, testConfig(t, "memory", "policy.yaml"))
	e := startExchange(t, context.Background(), s, "req-sse", "sam", chatPath, streamBody, 300)
	// The body sent upstream asks for the usage.
	var sent map[string]any
	mut := e.sentBody
	if err := json.Unmarshal([]byte(mut), &sent); err != nil {
		t.Fatalf("rewritten body %q: %v", mut, err)
	}
	if diff := cmp.Diff(map[string]any{"include_usage": true}, sent["stream_options"]); diff != "" {
		t.Errorf("stream_options (-want +got):\n%s", diff)
	}
	if !e.removedLength {
		t.Error("content-length was not removed before the body rewrite")
	}
	stream, withoutUsage := openAIStream([]string{"Hello", " there", " friend"}, `{"prompt_tokens":9,"completion_tokens":3,"total_tokens":12}`, "\n")
	e.send(respHeaders(headers(false, ":status", "200", "content-type", "text/event-stream")))
	e.streamResponse(stream, 37)
	e.close()
	if got := e.client.String(); got != withoutUsage {
		t.Errorf("client got\n%q\nwant\n%q", got, withoutUsage)
	}
	if got := remaining(t, s, userDesc("sam")); got != 988 {
		t.Errorf("remaining = %d, want 988", got)
	}
	if _, body := httpGet(t, "http://"+s.svc.HTTPAddr()+"/metrics"); !strings.Contains(body, "ratelimit_meter_stripped_chunks_total 1") {
		t.Error("metrics lack the stripped chunk")
	}
}

func TestMeterClientAskedForUsageKeepsIt(t *testing.T) {
	s := start(t, testConfig(t, "memory", "policy.yaml"))
	body := `{"model":"m","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hi"}]}`
	e := startExchange(t, context.Background(), s, "req-asked", "ann", chatPath, body, 200)
	if e.sentBody != body {
		t.Errorf("body rewritten to %q", e.sentBody)
	}
	stream, _ := openAIStream([]string{"Hi"}, `{"total_tokens":20}`, "\r\n")
	e.send(respHeaders(headers(false, ":status", "200", "content-type", "text/event-stream")))
	e.streamResponse(stream, 16)
	e.close()
	if e.client.String() != stream {
		t.Errorf("client got %q", e.client.String())
	}
	if got := remaining(t, s, userDesc("ann")); got != 980 {
		t.Errorf("remaining = %d, want 980", got)
	}
}

func TestMeterGeminiStream(t *testing.T) {
	s := start(t, testConfig(t, "memory", "policy.yaml"))
	path := "/gemini/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse"
	body := `{"contents":[{"parts":[{"text":"Say hi"}]}]}`
	e := startExchange(t, context.Background(), s, "req-gem", "gus", path, body, 400)
	if e.sentBody != body {
		t.Errorf("a Gemini body was rewritten: %q", e.sentBody)
	}
	stream := "data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"Hi\"}]}}],\"usageMetadata\":{\"promptTokenCount\":2,\"candidatesTokenCount\":1,\"totalTokenCount\":3}}\r\n\r\n" +
		"data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\" there\"}]},\"finishReason\":\"STOP\"}],\"usageMetadata\":{\"promptTokenCount\":2,\"candidatesTokenCount\":2,\"totalTokenCount\":4}}\r\n\r\n"
	e.send(respHeaders(headers(false, ":status", "200", "content-type", "text/event-stream")))
	e.streamResponse(stream, 50)
	e.close()
	if e.client.String() != stream {
		t.Errorf("client got %q", e.client.String())
	}
	if got := remaining(t, s, userDesc("gus")); got != 996 {
		t.Errorf("remaining = %d, want 996 (settled at the last usage, 4)", got)
	}
}

func TestMeterSettlesAtEstimateOrZero(t *testing.T) {
	tests := []struct {
		name, status, body string
		want               uint32
	}{
		{"missing usage", "200", `{"choices":[{"message":{"content":"Hello"}}]}`, 700},
		{"absurd usage", "200", `{"usage":{"total_tokens":50000000}}`, 700},
		{"negative usage", "200", `{"usage":{"total_tokens":-3}}`, 700},
		{"not JSON", "200", `<html>`, 700},
		{"provider error without usage", "500", `{"error":{"message":"boom"}}`, 1000},
		{"provider 429 without usage", "429", `{"error":{"message":"slow down"}}`, 1000},
		{"provider error with usage", "400", `{"error":{},"usage":{"total_tokens":7}}`, 993},
	}
	s := start(t, testConfig(t, "memory", "policy.yaml"))
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			user := fmt.Sprintf("est-%d", i)
			e := startExchange(t, context.Background(), s, "req-est-"+user, user, chatPath, chatBody, 300)
			e.send(respHeaders(headers(false, ":status", tt.status, "content-type", "application/json")))
			e.streamResponse(tt.body, 1000)
			e.close()
			if got := remaining(t, s, userDesc(user)); got != tt.want {
				t.Errorf("remaining = %d, want %d", got, tt.want)
			}
		})
	}
}

func TestMeterAbortSettlesAtWhatWasStreamed(t *testing.T) {
	s := start(t, testConfig(t, "memory", "policy.yaml"))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	e := startExchange(t, ctx, s, "req-abort", "abe", chatPath, streamBody, 300)
	stream, _ := openAIStream([]string{"Hello", " there", " friend", " and", " more"}, `{"total_tokens":30}`, "\n")
	// Up to the end of the third word's event: "Hello there friend", 18
	// bytes, 5 tokens.
	cut := strings.Index(stream, " and")
	cut = strings.LastIndex(stream[:cut], "data:")
	e.send(respHeaders(headers(false, ":status", "200", "content-type", "text/event-stream")))
	e.send(respBody(stream[:cut], false))
	cancel() // the client left
	prompt, _, _ := estimate.Body(chatPath, []byte(streamBody), 0)
	want := uint32(1000 - (prompt + 5))
	eventually(t, fmt.Sprintf("remaining %d after the abort", want), func() bool { return remaining(t, s, userDesc("abe")) == want })
	if _, body := httpGet(t, "http://"+s.svc.HTTPAddr()+"/metrics"); !strings.Contains(body, `ratelimit_meter_settles_total{outcome="aborted"} 1`) {
		t.Error("metrics lack the aborted settlement")
	}
}

func TestMeterUnknownRequestID(t *testing.T) {
	s := start(t, testConfig(t, "memory", "policy.yaml"))
	e := openExchange(t, context.Background(), meterClient(t, s))
	e.send(reqHeaders(headers(false, ":path", chatPath, "x-request-id", "never-reserved", "x-leaky-estimate", "100")))
	e.send(reqBody(chatBody))
	e.send(respHeaders(headers(false, ":status", "200", "content-type", "application/json")))
	e.streamResponse(`{"usage":{"total_tokens":5}}`, 100)
	e.close()
	if _, body := httpGet(t, "http://"+s.svc.HTTPAddr()+"/metrics"); !strings.Contains(body, `ratelimit_meter_settles_total{outcome="unknown"} 1`) {
		t.Error("metrics lack the unknown settlement")
	}
}

func TestMeterMalformedMessage(t *testing.T) {
	s := start(t, testConfig(t, "memory", "policy.yaml"))
	st, err := meterClient(t, s).Process(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Send(&extprocv3.ProcessingRequest{}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Recv(); status.Code(err) != codes.InvalidArgument {
		t.Errorf("empty message: %v, want InvalidArgument", err)
	}
}

func TestMeterClampsMaxTokens(t *testing.T) {
	s := start(t, testConfig(t, "memory", "metered.yaml"))
	body := `{"model":"m","max_tokens":5000,"messages":[{"role":"user","content":"Tell me a story <please>"}]}`
	e := startExchange(t, context.Background(), s, "req-clamp", "cal", chatPath, body, 300)
	var sent map[string]any
	if err := json.Unmarshal([]byte(e.sentBody), &sent); err != nil {
		t.Fatalf("rewritten body %q: %v", e.sentBody, err)
	}
	prompt, _, _ := estimate.Body(chatPath, []byte(`{"model":"m","messages":[{"role":"user","content":"Tell me a story <please>"}]}`), 0)
	if got, want := sent["max_tokens"], float64(300-prompt); got != want {
		t.Errorf("max_tokens = %v, want %v", got, want)
	}
	if !strings.Contains(e.sentBody, "<please>") {
		t.Errorf("text was escaped: %s", e.sentBody)
	}
	// A lower limit is never raised.
	low := `{"model":"m","max_tokens":10,"messages":[{"role":"user","content":"hi"}]}`
	e2 := startExchange(t, context.Background(), s, "req-clamp-2", "cal2", chatPath, low, 300)
	if e2.sentBody != low {
		t.Errorf("a lower limit was rewritten: %q", e2.sentBody)
	}
}

func TestMeterConcurrentStreams(t *testing.T) {
	s := start(t, testConfig(t, "memory", "policy.yaml"))
	c := meterClient(t, s)
	const n = 64
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		id := fmt.Sprintf("req-conc-%d", i)
		reserveAs(t, s, id, 100, "provider=openai")
		wg.Go(func() {
			stream, _ := openAIStream([]string{"a", "b"}, `{"total_tokens":10}`, "\n")
			if err := driveExchange(c, []*extprocv3.ProcessingRequest{
				reqHeaders(headers(false, ":path", chatPath, "x-request-id", id, "x-leaky-estimate", "100")),
				reqBody(streamBody),
				respHeaders(headers(false, ":status", "200", "content-type", "text/event-stream")),
				respBody(stream, false),
				respBody("", true),
			}); err != nil {
				errs <- fmt.Errorf("%s: %w", id, err)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if got := remaining(t, s, "provider=openai"); got != 100000-n*10 {
		t.Errorf("provider pool remaining = %d, want %d", got, 100000-n*10)
	}
}

func TestRequestIDDescriptor(t *testing.T) {
	s := start(t, testConfig(t, "memory", "policy.yaml"))
	// Alone it is no bucket.
	r := s.ask(t, "leaky-tokens", 50, desc("request_id=solo"))
	if r.OverallCode != rlsv3.RateLimitResponse_OK || r.Statuses[0].CurrentLimit != nil {
		t.Errorf("request_id alone = %v", r)
	}
	reserveAs(t, s, "dup", 100, userDesc("dee"))
	// The same id again is refused, charging nothing.
	_, err := s.client.ShouldRateLimit(context.Background(), &rlsv3.RateLimitRequest{Domain: "leaky-tokens",
		Descriptors: []*ratelimitv3.RateLimitDescriptor{withHits(desc(userDesc("dee")), 100), withHits(desc("request_id=dup"), 100)}})
	if status.Code(err) != codes.InvalidArgument {
		t.Errorf("duplicate id: %v, want InvalidArgument", err)
	}
	if got := remaining(t, s, userDesc("dee")); got != 900 {
		t.Errorf("remaining = %d, want 900 (the duplicate charged nothing)", got)
	}
	if s.svc.Reservations().Open() != 1 {
		t.Errorf("open reservations = %d, want 1", s.svc.Reservations().Open())
	}
	// Without the descriptor nothing is reserved.
	s.ask(t, "leaky-tokens", 10, desc(userDesc("dee")))
	if s.svc.Reservations().Open() != 1 {
		t.Errorf("open reservations = %d after a request without an id", s.svc.Reservations().Open())
	}
}

func TestMeterLargeRequestBody(t *testing.T) {
	s := start(t, testConfig(t, "memory", "policy.yaml"))
	// Larger than a rate-limit request may be, within what the gateway
	// buffers: the processor still reads and rewrites it.
	body := `{"model":"m","stream":true,"messages":[{"role":"user","content":"` + strings.Repeat("word ", 120<<10) + `"}]}`
	e := startExchange(t, context.Background(), s, "req-large", "lara", chatPath, body, 900)
	if !strings.Contains(e.sentBody, `"include_usage":true`) {
		t.Errorf("a %d-byte body was not rewritten", len(body))
	}
}

// A metered request with quotas: the reservation carries its quota refs,
// so the settlement splits the actual per pool and the quota is refunded.
func TestMeterSettlesQuotas(t *testing.T) {
	for _, kind := range []string{"memory", "redis"} {
		t.Run(kind, func(t *testing.T) {
			s := start(t, testConfig(t, kind, "quota.yaml"))
			recorded := recordSettlements(s)
			e := startExchange(t, context.Background(), s, "req-quota", "quin", chatPath, chatBody, 80)
			e.send(respHeaders(headers(false, ":status", "200", "content-type", "application/json")))
			e.streamResponse(`{"usage":{"total_tokens":30}}`, 100)
			e.close()
			settled := recorded()
			if len(settled) != 1 || len(settled[0].Quotas) != 1 {
				t.Fatalf("settlements = %+v, want one with one quota", settled)
			}
			q := settled[0].Quotas[0]
			if want := (ledger.Pool{Scope: "user", Subject: "quin", Provider: "openai"}); q.Pool != want || q.FromWindow != 30 || q.FromPurchased != 0 {
				t.Errorf("quota charge = %+v, want 30 from the window of %+v", q, want)
			}
			// 100 allowance − 30 used: a request of 70 passes, one more token does not.
			if r := s.ask(t, "leaky-tokens", 71, desc(userDesc("quin"))); r.OverallCode != rlsv3.RateLimitResponse_OVER_LIMIT {
				t.Errorf("71 more tokens: %v, want OVER_LIMIT (quota left 70)", r.OverallCode)
			}
			if r := s.ask(t, "leaky-tokens", 70, desc(userDesc("quin"))); r.OverallCode != rlsv3.RateLimitResponse_OK {
				t.Errorf("70 more tokens: %v, want OK", r.OverallCode)
			}
		})
	}
}

// A stream that reports no usage but carries more text than the estimate
// allowed settles at what streamed, not at the lower estimate.
func TestMeterNoUsageSettlesAtLeastWhatStreamed(t *testing.T) {
	s := start(t, testConfig(t, "memory", "policy.yaml"))
	e := startExchange(t, context.Background(), s, "req-long", "lou", chatPath, streamBody, 300)
	words := make([]string, 400)
	for i := range words {
		words[i] = "word " // 5 bytes each: 2000 bytes, 500 tokens
	}
	stream, _ := openAIStream(words, "", "\n")
	e.send(respHeaders(headers(false, ":status", "200", "content-type", "text/event-stream")))
	e.streamResponse(stream, 200)
	e.close()
	prompt, _, _ := estimate.Body(chatPath, []byte(streamBody), 0)
	want := uint32(1000 - (prompt + 500))
	eventually(t, fmt.Sprintf("remaining %d", want), func() bool { return remaining(t, s, userDesc("lou")) == want })
}
