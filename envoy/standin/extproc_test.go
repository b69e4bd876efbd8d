package standin

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	extprocsvcv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/leakytokens/leaky/controlplane/model"
	"github.com/leakytokens/leaky/internal/contract"
)

// meterFixture is the default fixture with the ext_proc filter.
func meterFixture(allow bool) fixture {
	f := defaultFixture()
	f.meter, f.meterAllow = true, allow
	return f
}

// describe names a message by its kind, body and end_of_stream.
func describe(req *extprocsvcv3.ProcessingRequest) string {
	switch r := req.GetRequest().(type) {
	case *extprocsvcv3.ProcessingRequest_RequestHeaders:
		return fmt.Sprintf("request_headers eos=%v", r.RequestHeaders.GetEndOfStream())
	case *extprocsvcv3.ProcessingRequest_RequestBody:
		return fmt.Sprintf("request_body %q eos=%v", r.RequestBody.GetBody(), r.RequestBody.GetEndOfStream())
	case *extprocsvcv3.ProcessingRequest_ResponseHeaders:
		return fmt.Sprintf("response_headers :status=%s eos=%v", headerValue(r.ResponseHeaders, ":status"), r.ResponseHeaders.GetEndOfStream())
	case *extprocsvcv3.ProcessingRequest_ResponseBody:
		return fmt.Sprintf("response_body %q eos=%v", r.ResponseBody.GetBody(), r.ResponseBody.GetEndOfStream())
	}
	return fmt.Sprintf("%T", req.GetRequest())
}

func describeAll(reqs []*extprocsvcv3.ProcessingRequest) []string {
	out := make([]string, len(reqs))
	for i, r := range reqs {
		out[i] = describe(r)
	}
	return out
}

// headerValue is the first value of name (as raw_value) in hh.
func headerValue(hh *extprocsvcv3.HttpHeaders, name string) string {
	for _, h := range hh.GetHeaders().GetHeaders() {
		if h.GetKey() == name {
			return string(h.GetRawValue())
		}
	}
	return ""
}

// endedStreams waits until n streams have ended and returns them.
func endedStreams(h *harness, n int) []procStream {
	h.t.Helper()
	var got []procStream
	h.waitFor(fmt.Sprintf("%d ended ext_proc streams", n), func() bool {
		got = h.proc.snapshot()
		ended := 0
		for _, s := range got {
			if s.ended != "" {
				ended++
			}
		}
		return ended >= n
	})
	return got
}

func TestExtProcExchangeForAJSONResponse(t *testing.T) {
	h, rec := providerHarness(t, meterFixture(false))
	const answer = `{"id":"c1","usage":{"total_tokens":7}}`
	rec.setHandler(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, answer)
	})
	const body = `{"model":"gpt-4o"}`
	resp, got := h.do("POST", "/openai/v1/chat/completions", http.Header{"Content-Type": {"application/json"}, "X-Request-Id": {"chosen-by-client"}}, body)
	if resp.StatusCode != 200 || got != answer {
		t.Fatalf("answer = %d %q, want 200 %q", resp.StatusCode, got, answer)
	}
	streams := endedStreams(h, 1)
	if len(streams) != 1 || streams[0].ended != "eof" {
		t.Fatalf("streams = %+v, want one, half-closed by the gateway", streams)
	}
	msgs := streams[0].got
	want := []string{
		"request_headers eos=false",
		fmt.Sprintf("request_body %q eos=true", body),
		"response_headers :status=200 eos=false",
		fmt.Sprintf("response_body %q eos=false", answer),
		`response_body "" eos=true`,
	}
	if d := cmp.Diff(want, describeAll(msgs)); d != "" {
		t.Fatalf("messages (-want +got):\n%s", d)
	}
	pc := msgs[0].GetProtocolConfig()
	if pc.GetRequestBodyMode() != extprocv3.ProcessingMode_BUFFERED || pc.GetResponseBodyMode() != extprocv3.ProcessingMode_STREAMED || msgs[1].GetProtocolConfig() != nil {
		t.Errorf("protocol_config = %v then %v, want BUFFERED/STREAMED on the first message only", pc, msgs[1].GetProtocolConfig())
	}
	hh := msgs[0].GetRequestHeaders()
	for name, value := range map[string]string{":method": "POST", ":path": "/openai/v1/chat/completions", ":scheme": "http",
		":authority": h.gw.Addr(), contract.HeaderUserID: "u1", contract.HeaderEstimate: "42", "content-type": "application/json"} {
		if v := headerValue(hh, name); v != value {
			t.Errorf("request_headers %s = %q, want %q", name, v, value)
		}
	}
	for _, hv := range hh.GetHeaders().GetHeaders() {
		if hv.GetValue() != "" {
			t.Errorf("header %s sent in value %q, want raw_value only", hv.GetKey(), hv.GetValue())
		}
	}
	// The request id: fresh, the same for the processor, the descriptors
	// and the upstream.
	id := headerValue(hh, "x-request-id")
	if u, err := uuid.Parse(id); err != nil || u.Version() != 4 {
		t.Errorf("x-request-id = %q, want a fresh UUIDv4 instead of the client's", id)
	}
	if up := rec.requests(); len(up) != 1 || up[0].header.Get("X-Request-Id") != id {
		t.Errorf("upstream x-request-id = %q, want %q", up[0].header.Get("X-Request-Id"), id)
	}
	descs := h.rls.requests()[0].GetDescriptors()
	last := descs[len(descs)-1]
	if len(last.GetEntries()) != 1 || last.GetEntries()[0].GetKey() != contract.KeyRequestID || last.GetEntries()[0].GetValue() != id ||
		last.GetHitsAddend().GetValue() != 42 {
		t.Errorf("last descriptor = %v, want (request_id, %s) charged 42", last, id)
	}
	if rh := msgs[2].GetResponseHeaders(); headerValue(rh, "content-type") != "application/json" {
		t.Errorf("response_headers = %v, want the upstream's content-type", rh)
	}
}

// sseUpstream answers with events, each written and flushed only once the
// test read the one before from the gateway (release), so an event stream
// that did not flow event by event would stall the test.
func sseUpstream(rec *recorder, events []string, release <-chan struct{}) {
	rec.setHandler(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		w.Header().Set("X-Upstream-Secret", "s3")
		for i, e := range events {
			if i > 0 {
				select {
				case <-release:
				case <-r.Context().Done():
					return
				}
			}
			io.WriteString(w, e)
			w.(http.Flusher).Flush()
		}
	})
}

// readEvents reads n events from an event stream, releasing the upstream's
// next one after each, and returns them.
func readEvents(t *testing.T, body *bufio.Reader, n int, release chan<- struct{}) []string {
	t.Helper()
	var out []string
	for len(out) < n {
		var ev strings.Builder
		for {
			line, err := body.ReadString('\n')
			if err != nil {
				t.Fatalf("reading event %d: %v (read %q)", len(out)+1, err, out)
			}
			ev.WriteString(line)
			if line == "\n" {
				break
			}
		}
		out = append(out, ev.String())
		release <- struct{}{}
	}
	return out
}

func (h *harness) stream(path string) (*http.Response, *bufio.Reader) {
	h.t.Helper()
	req, err := http.NewRequest("POST", h.base+path, strings.NewReader(`{"stream":true}`))
	if err != nil {
		h.t.Fatal(err)
	}
	resp, err := h.client.Do(req)
	if err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(func() { resp.Body.Close() })
	return resp, bufio.NewReader(resp.Body)
}

func TestExtProcStreamsAnEventStreamChunkByChunk(t *testing.T) {
	h, rec := providerHarness(t, meterFixture(false))
	events := []string{"data: {\"n\":1}\n\n", "data: {\"n\":2}\n\n", "data: [DONE]\n\n"}
	release := make(chan struct{}, 1)
	sseUpstream(rec, events, release)
	resp, body := h.stream("/openai/v1/chat/completions")
	if resp.StatusCode != 200 || resp.ContentLength != -1 {
		t.Fatalf("status %d, length %d; want 200 with no declared length", resp.StatusCode, resp.ContentLength)
	}
	if got := readEvents(t, body, len(events), release); !cmp.Equal(got, events) {
		t.Errorf("events = %q, want %q", got, events)
	}
	streams := endedStreams(h, 1)
	want := []string{"request_headers eos=false", `request_body "{\"stream\":true}" eos=true`, "response_headers :status=200 eos=false"}
	for _, e := range events {
		want = append(want, fmt.Sprintf("response_body %q eos=false", e))
	}
	want = append(want, `response_body "" eos=true`)
	if d := cmp.Diff(want, describeAll(streams[0].got)); d != "" || streams[0].ended != "eof" {
		t.Errorf("messages (-want +got):\n%s\nended %q, want eof", d, streams[0].ended)
	}
}

func TestExtProcRequestBodyMutation(t *testing.T) {
	h, rec := providerHarness(t, meterFixture(false))
	const rewritten = `{"model":"gpt-4o","max_tokens":100,"stream_options":{"include_usage":true}}`
	h.proc.setAnswer(func(req *extprocsvcv3.ProcessingRequest) (*extprocsvcv3.ProcessingResponse, error) {
		switch req.GetRequest().(type) {
		case *extprocsvcv3.ProcessingRequest_RequestHeaders:
			return answerWith(req, &extprocsvcv3.CommonResponse{HeaderMutation: &extprocsvcv3.HeaderMutation{
				RemoveHeaders: []string{"content-length"},
				SetHeaders:    []*corev3.HeaderValueOption{{Header: &corev3.HeaderValue{Key: "x-metered", RawValue: []byte("yes")}}},
			}}), nil
		case *extprocsvcv3.ProcessingRequest_RequestBody:
			return answerWith(req, &extprocsvcv3.CommonResponse{BodyMutation: &extprocsvcv3.BodyMutation{
				Mutation: &extprocsvcv3.BodyMutation_Body{Body: []byte(rewritten)}}}), nil
		}
		return continueAll(req)
	})
	if resp, _ := h.do("POST", "/openai/v1/chat/completions", http.Header{"Content-Type": {"application/json"}}, `{"model":"gpt-4o","max_tokens":9999}`); resp.StatusCode != 200 {
		t.Fatalf("status = %d, want 200", resp.StatusCode)
	}
	up := rec.requests()
	if len(up) != 1 {
		t.Fatalf("upstream requests = %d, want 1", len(up))
	}
	if up[0].body != rewritten || up[0].header.Get("Content-Length") != fmt.Sprint(len(rewritten)) || up[0].header.Get("X-Metered") != "yes" {
		t.Errorf("upstream got %q, content-length %q, x-metered %q; want %q, %d, yes",
			up[0].body, up[0].header.Get("Content-Length"), up[0].header.Get("X-Metered"), rewritten, len(rewritten))
	}
}

func TestExtProcResponseMutations(t *testing.T) {
	h, rec := providerHarness(t, meterFixture(false))
	events := []string{"data: 1\n\n", "data: 2\n\n", "data: 3\n\n", "data: 4\n\n"}
	release := make(chan struct{}, 1)
	sseUpstream(rec, events, release)
	h.proc.setAnswer(func(req *extprocsvcv3.ProcessingRequest) (*extprocsvcv3.ProcessingResponse, error) {
		switch string(req.GetResponseBody().GetBody()) {
		case events[1]:
			return answerWith(req, &extprocsvcv3.CommonResponse{BodyMutation: &extprocsvcv3.BodyMutation{
				Mutation: &extprocsvcv3.BodyMutation_Body{Body: []byte("data: two\n\n")}}}), nil
		case events[2]:
			return answerWith(req, &extprocsvcv3.CommonResponse{BodyMutation: &extprocsvcv3.BodyMutation{
				Mutation: &extprocsvcv3.BodyMutation_ClearBody{ClearBody: true}}}), nil
		}
		if req.GetResponseHeaders() != nil {
			return answerWith(req, &extprocsvcv3.CommonResponse{HeaderMutation: &extprocsvcv3.HeaderMutation{
				RemoveHeaders: []string{"x-upstream-secret"},
				SetHeaders: []*corev3.HeaderValueOption{
					{Header: &corev3.HeaderValue{Key: "x-usage", Value: "pending"}},
					{Header: &corev3.HeaderValue{Key: "x-envoy-metered", Value: "yes"}}, // protected: ignored
				},
			}}), nil
		}
		return continueAll(req)
	})
	resp, body := h.stream("/openai/v1/chat/completions")
	if resp.Header.Get("X-Usage") != "pending" || resp.Header.Get("X-Upstream-Secret") != "" || resp.Header.Get("X-Envoy-Metered") != "" {
		t.Errorf("response headers %v: want x-usage set, x-upstream-secret removed, x-envoy-* untouched", resp.Header)
	}
	// Event 3 is cleared: the upstream's fourth is released once the
	// processor answered for the third (so the two stay separate chunks).
	got := readEvents(t, body, 1, release)
	got = append(got, readEvents(t, body, 1, release)...)
	h.waitFor("the third event at the processor", func() bool {
		for _, m := range h.proc.snapshot()[0].got {
			if string(m.GetResponseBody().GetBody()) == events[2] {
				return true
			}
		}
		return false
	})
	release <- struct{}{}
	got = append(got, readEvents(t, body, 1, make(chan struct{}, 1))...)
	if want := []string{"data: 1\n\n", "data: two\n\n", "data: 4\n\n"}; !cmp.Equal(got, want) {
		t.Errorf("events = %q, want %q", got, want)
	}
	if rest, _ := io.ReadAll(body); len(rest) != 0 {
		t.Errorf("after the last event: %q, want nothing", rest)
	}
}

// stallOrFail makes the processor stall (err nil) or fail with err on the
// first message of kind, answering the others.
func stallOrFail(kind string, err error) func(*extprocsvcv3.ProcessingRequest) (*extprocsvcv3.ProcessingResponse, error) {
	return func(req *extprocsvcv3.ProcessingRequest) (*extprocsvcv3.ProcessingResponse, error) {
		if strings.HasPrefix(describe(req), kind) {
			return nil, err
		}
		return continueAll(req)
	}
}

func TestExtProcFailureModes(t *testing.T) {
	unavailable := status.Error(codes.Unavailable, "processor down")
	for _, tc := range []struct {
		name  string
		allow bool
		kind  string
		err   error // nil: a stall, until message_timeout
		want  int   // the client's status; 0: the stream is reset mid-body
		up    int   // upstream requests
	}{
		{"stall on request headers, allow", true, "request_headers", nil, 200, 1},
		{"stall on request headers, deny", false, "request_headers", nil, 500, 0},
		{"error on request headers, allow", true, "request_headers", unavailable, 200, 1},
		{"error on request headers, deny", false, "request_headers", unavailable, 500, 0},
		{"stall on the request body, deny", false, "request_body", nil, 500, 0},
		{"error on response headers, deny", false, "response_headers", unavailable, 500, 1},
		{"stall on a response chunk, allow", true, "response_body", nil, 200, 1},
		{"error on a response chunk, deny", false, "response_body", unavailable, 0, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := meterFixture(tc.allow)
			if tc.err == nil {
				f.meterTimeout = 300 * time.Millisecond // the stall outlasts any timeout
			}
			h, rec := providerHarness(t, f)
			h.proc.setAnswer(stallOrFail(tc.kind, tc.err))
			resp, err := h.client.Post(h.base+"/openai/v1/chat/completions", "application/json", strings.NewReader(`{"model":"gpt-4o"}`))
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, readErr := io.ReadAll(resp.Body)
			switch {
			case tc.want == 0 && (resp.StatusCode != 200 || readErr == nil):
				t.Errorf("got %d %q, %v; want 200 then a reset body", resp.StatusCode, body, readErr)
			case tc.want == 500 && (resp.StatusCode != 500 || string(body) != `{"error":"ext_proc_error","message":"","status":500}`+"\n"):
				t.Errorf("got %d %q, want 500 with the JSON envelope", resp.StatusCode, body)
			case tc.want == 200 && (resp.StatusCode != 200 || string(body) != "ok from upstream" || readErr != nil):
				t.Errorf("got %d %q, %v; want the upstream's answer whole", resp.StatusCode, body, readErr)
			}
			if n := len(rec.requests()); n != tc.up {
				t.Errorf("upstream requests = %d, want %d", n, tc.up)
			}
			if s := endedStreams(h, 1); s[0].ended == "eof" {
				t.Errorf("stream ended %q, want it cut off by the gateway", s[0].ended)
			}
		})
	}
}

func TestExtProcImmediateResponse(t *testing.T) {
	h, rec := providerHarness(t, meterFixture(false))
	h.proc.setAnswer(func(req *extprocsvcv3.ProcessingRequest) (*extprocsvcv3.ProcessingResponse, error) {
		return &extprocsvcv3.ProcessingResponse{Response: &extprocsvcv3.ProcessingResponse_ImmediateResponse{ImmediateResponse: &extprocsvcv3.ImmediateResponse{
			Status:  &typev3.HttpStatus{Code: typev3.StatusCode_PaymentRequired},
			Body:    []byte("no budget"),
			Details: "budget_exhausted",
			Headers: &extprocsvcv3.HeaderMutation{SetHeaders: []*corev3.HeaderValueOption{{Header: &corev3.HeaderValue{Key: "x-why", Value: "budget"}}}},
		}}}, nil
	})
	resp, body := h.do("POST", "/openai/v1/chat/completions", nil, `{}`)
	if resp.StatusCode != 402 || resp.Header.Get("X-Why") != "budget" || body != `{"error":"budget_exhausted","message":"no budget","status":402}`+"\n" {
		t.Errorf("got %d %v %q, want the processor's 402 in the local reply format", resp.StatusCode, resp.Header, body)
	}
	if n := len(rec.requests()); n != 0 {
		t.Errorf("upstream requests = %d, want none", n)
	}
}

func TestExtProcIsOffWhereTheRouteDisablesIt(t *testing.T) {
	f := meterFixture(false)
	tokens := newRecorder(t)
	f.endpoints[model.ServiceRatelimitHTTP] = []string{tokens.addr()}
	h, _ := providerHarness(t, f)
	if resp, _ := h.do("GET", "/api/v1/tokens/status", nil, ""); resp.StatusCode != 200 || len(tokens.requests()) != 1 {
		t.Fatalf("token API: %d, %d requests; want 200 from the token API", resp.StatusCode, len(tokens.requests()))
	}
	if s := h.proc.snapshot(); len(s) != 0 {
		t.Errorf("ext_proc streams for the token API = %d, want none", len(s))
	}
	h.do("GET", "/openai/v1/models", nil, "")
	if s := endedStreams(h, 1); len(s) != 1 || describe(s[0].got[0]) != "request_headers eos=true" {
		t.Errorf("streams for a provider route = %+v, want one starting with the bodyless request's headers", s)
	}
}
