package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	ratelimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// meterClient is an ext_proc client of s, as Envoy's filter is.
func meterClient(t *testing.T, s *server) extprocv3.ExternalProcessorClient {
	t.Helper()
	return extprocv3.NewExternalProcessorClient(meterConn(t, s))
}

func meterConn(t testing.TB, s *server) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(s.svc.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// driveExchange sends msgs on one stream, each after the previous answer,
// then ends the stream and waits for the processor to finish it.
func driveExchange(c extprocv3.ExternalProcessorClient, msgs []*extprocv3.ProcessingRequest) error {
	st, err := c.Process(context.Background())
	if err != nil {
		return err
	}
	for _, m := range msgs {
		if err := st.Send(m); err != nil {
			return err
		}
		if _, err := st.Recv(); err != nil {
			return err
		}
	}
	if err := st.CloseSend(); err != nil {
		return err
	}
	if _, err := st.Recv(); !errors.Is(err, io.EOF) {
		return fmt.Errorf("stream end: %v, want EOF", err)
	}
	return nil
}

// splitEvents splits an SSE body after each blank line.
func splitEvents(body string) []string {
	var out []string
	for body != "" {
		i := strings.Index(body, "\n\n")
		if i < 0 {
			return append(out, body)
		}
		out, body = append(out, body[:i+2]), body[i+2:]
	}
	return out
}

// reserveAs admits a request of hits tokens on the descriptors ds plus the
// request-id descriptor of id, as Envoy asks with the control plane's
// actions, and fails the test unless it is admitted.
func reserveAs(t *testing.T, s *server, id string, hits uint64, ds ...string) {
	t.Helper()
	req := &rlsv3.RateLimitRequest{Domain: "leaky-tokens"}
	for _, d := range append(ds, "request_id="+id) {
		req.Descriptors = append(req.Descriptors, withHits(desc(d), hits))
	}
	resp, err := s.client.ShouldRateLimit(context.Background(), req)
	if err != nil || resp.OverallCode != rlsv3.RateLimitResponse_OK {
		t.Fatalf("reserve %s: %v, %v", id, resp.GetOverallCode(), err)
	}
	if last := resp.Statuses[len(resp.Statuses)-1]; last.CurrentLimit != nil || last.Code != rlsv3.RateLimitResponse_OK {
		t.Errorf("request_id status = %v, want OK with no limit", last)
	}
}

// remaining reads a bucket's remaining tokens without charging it.
func remaining(t *testing.T, s *server, d string) uint32 {
	t.Helper()
	resp, err := s.client.ShouldRateLimit(context.Background(), &rlsv3.RateLimitRequest{
		Domain: "leaky-tokens", Descriptors: []*ratelimitv3.RateLimitDescriptor{{
			Entries: desc(d).Entries, HitsAddend: wrapperspb.UInt64(0)}}})
	if err != nil {
		t.Fatal(err)
	}
	return resp.Statuses[0].LimitRemaining
}

func headers(end bool, kv ...string) *extprocv3.HttpHeaders {
	h := &corev3.HeaderMap{}
	for i := 0; i+1 < len(kv); i += 2 {
		h.Headers = append(h.Headers, &corev3.HeaderValue{Key: kv[i], RawValue: []byte(kv[i+1])})
	}
	return &extprocv3.HttpHeaders{Headers: h, EndOfStream: end}
}

func reqHeaders(h *extprocv3.HttpHeaders) *extprocv3.ProcessingRequest {
	return &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestHeaders{RequestHeaders: h}}
}

func reqBody(b string) *extprocv3.ProcessingRequest {
	return &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestBody{
		RequestBody: &extprocv3.HttpBody{Body: []byte(b), EndOfStream: true}}}
}

func respHeaders(h *extprocv3.HttpHeaders) *extprocv3.ProcessingRequest {
	return &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseHeaders{ResponseHeaders: h}}
}

func respBody(b string, end bool) *extprocv3.ProcessingRequest {
	return &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseBody{
		ResponseBody: &extprocv3.HttpBody{Body: []byte(b), EndOfStream: end}}}
}

// exchange drives one ext_proc stream as Envoy does: each message waits
// for its answer.
type exchangeClient struct {
	t      *testing.T
	stream extprocv3.ExternalProcessor_ProcessClient
	client strings.Builder // the response body as the client receives it
	// sentBody is the request body as the gateway sends it upstream, and
	// removedLength whether the processor removed its content-length.
	sentBody      string
	removedLength bool
}

func openExchange(t *testing.T, ctx context.Context, c extprocv3.ExternalProcessorClient) *exchangeClient {
	t.Helper()
	st, err := c.Process(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return &exchangeClient{t: t, stream: st}
}

func (e *exchangeClient) send(m *extprocv3.ProcessingRequest) *extprocv3.ProcessingResponse {
	e.t.Helper()
	if err := e.stream.Send(m); err != nil {
		e.t.Fatalf("send: %v", err)
	}
	r, err := e.stream.Recv()
	if err != nil {
		e.t.Fatalf("recv: %v", err)
	}
	if h := r.GetRequestHeaders(); h != nil {
		for _, name := range h.GetResponse().GetHeaderMutation().GetRemoveHeaders() {
			e.removedLength = e.removedLength || strings.EqualFold(name, "content-length")
		}
	}
	if b := m.GetRequestBody(); b != nil {
		e.sentBody = applyBody(b.GetBody(), r.GetRequestBody().GetResponse().GetBodyMutation())
	}
	if b := m.GetResponseBody(); b != nil {
		e.client.WriteString(applyBody(b.GetBody(), r.GetResponseBody().GetResponse().GetBodyMutation()))
	}
	return r
}

// applyBody is what the gateway forwards for a chunk given the mutation.
func applyBody(chunk []byte, mut *extprocv3.BodyMutation) string {
	switch {
	case mut == nil:
		return string(chunk)
	case mut.GetClearBody():
		return ""
	}
	return string(mut.GetBody())
}

// close ends the stream as Envoy does after the response and waits for the
// processor to finish it (its settlement included).
func (e *exchangeClient) close() {
	e.t.Helper()
	if err := e.stream.CloseSend(); err != nil {
		e.t.Fatal(err)
	}
	if _, err := e.stream.Recv(); !errors.Is(err, io.EOF) {
		e.t.Fatalf("stream end: %v, want EOF", err)
	}
}

// streamResponse sends body in chunks of n bytes, an empty final chunk with
// end_of_stream, as the gateway does after data.
func (e *exchangeClient) streamResponse(body string, n int) {
	e.t.Helper()
	for i := 0; i < len(body); i += n {
		e.send(respBody(body[i:min(i+n, len(body))], false))
	}
	e.send(respBody("", true))
}
