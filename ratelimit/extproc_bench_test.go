package ratelimit

import (
	"context"
	"fmt"
	"testing"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"

	"github.com/leakytokens/leaky/ratelimit/store"
)

// BenchmarkMeterStreamedResponse measures the metering of one streamed
// chat completion through the real gRPC server over loopback, as Envoy
// drives it: request headers and body (usage forced), response headers,
// 50 SSE chunks of one event each and the end, the usage chunk stripped and
// the settlement on the memory store. Each iteration's reservation is made
// in process (one memory-store decision) before its exchange. It reports
// the exchange's size (messages/op, and chunks/op: the response_body
// messages, the final empty one included) so that make bench can print the
// cost per chunk beside the cost per response.
func BenchmarkMeterStreamedResponse(b *testing.B) {
	cfg := DefaultConfig()
	cfg.GRPCAddr, cfg.HTTPAddr = "127.0.0.1:0", "127.0.0.1:0"
	s := start(b, cfg)
	conn := meterConn(b, s)
	c := extprocv3.NewExternalProcessorClient(conn)
	words := make([]string, 48)
	for i := range words {
		words[i] = fmt.Sprintf(" w%d", i)
	}
	stream, _ := openAIStream(words, `{"prompt_tokens":9,"completion_tokens":48,"total_tokens":57}`, "\n")
	var chunks []*extprocv3.ProcessingRequest
	for _, ev := range splitEvents(stream) {
		chunks = append(chunks, respBody(ev, false))
	}
	chunks = append(chunks, respBody("", true))
	msgsPerOp := 3 + len(chunks)
	item := store.Item{Key: "bench-meter", Algorithm: store.GCRA, Limit: 1 << 40, Period: 1, Hits: 200}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		id := fmt.Sprintf("bench-%d", i)
		i++
		if _, _, err := s.svc.Reservations().ReserveAs(context.Background(), id, Owner{}, []store.Item{item}, nil, 0); err != nil {
			b.Fatal(err)
		}
		msgs := append([]*extprocv3.ProcessingRequest{
			reqHeaders(headers(false, ":path", chatPath, "x-request-id", id, "x-leaky-estimate", "200")),
			reqBody(streamBody),
			respHeaders(headers(false, ":status", "200", "content-type", "text/event-stream")),
		}, chunks...)
		if err := driveExchange(c, msgs); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(msgsPerOp), "messages/op")
	b.ReportMetric(float64(len(chunks)), "chunks/op")
}
