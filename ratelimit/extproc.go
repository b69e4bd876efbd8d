package ratelimit

import (
	"context"
	"errors"
	"io"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/leakytokens/leaky/internal/policy"
	"github.com/leakytokens/leaky/internal/serve"
	"github.com/leakytokens/leaky/ratelimit/ledger"
)

// settleTimeout bounds one settlement's store calls (the take, its
// retries, the adjustment); it runs after the message it concerns was
// answered, or after the stream ended. Reservations.Settle also gives it to
// a caller whose context has no deadline.
const settleTimeout = 2 * time.Second

// meter is the metering: Envoy's ext_proc ExternalProcessor on the
// service's gRPC listener (wire agreements 3–5). Per request it may
// rewrite the body so the provider reports its usage, reads that usage from
// the response as it passes, and settles the reservation ShouldRateLimit
// made under the request's x-request-id at it.
type meter struct {
	s *Service
}

var _ extprocv3.ExternalProcessorServer = meter{}

// Process serves one request's exchange. Every message is answered without
// I/O; the one store call, the settlement, runs after the answer to the
// last response chunk (or when the stream ends early, after the stream's
// end, on a context of its own).
func (m meter) Process(stream extprocv3.ExternalProcessor_ProcessServer) error {
	ctx := stream.Context()
	x := m.newExchange()
	for {
		req, err := stream.Recv()
		if err != nil {
			x.abort(ctx)
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		resp, err := x.handle(req)
		if err != nil {
			x.settleAt(ctx, x.estimate, outcomeEstimate)
			return err
		}
		if err := stream.Send(resp); err != nil {
			x.abort(ctx)
			return err
		}
		if x.ended {
			x.finish(ctx)
		}
	}
}

// exchange is the metering's state of one request.
type exchange struct {
	m        meter
	metering policy.Metering // the policy's, when the exchange began

	id       string // x-request-id: the reservation; "" = nothing to meter
	path     string
	provider string
	estimate int64 // tokens the request was reserved at (x-leaky-estimate)
	prompt   int64 // the estimate's prompt part; -1 until the body was read

	strip  bool // the metering asked for the stream's usage: remove it
	status int  // the response's :status; 0 before response headers
	reader *usageReader
	ended  bool // the response ended (end_of_stream): settle
	done   bool // settled, or nothing to settle
}

func (m meter) newExchange() *exchange {
	x := &exchange{m: m, metering: policy.DefaultMetering(), prompt: -1}
	if p := m.s.limits.Load().policy; p != nil {
		x.metering = p.Metering
	}
	return x
}

// handle answers one message.
func (x *exchange) handle(req *extprocv3.ProcessingRequest) (*extprocv3.ProcessingResponse, error) {
	switch r := req.GetRequest().(type) {
	case *extprocv3.ProcessingRequest_RequestHeaders:
		return x.requestHeaders(r.RequestHeaders), nil
	case *extprocv3.ProcessingRequest_RequestBody:
		return x.requestBody(r.RequestBody), nil
	case *extprocv3.ProcessingRequest_ResponseHeaders:
		return x.responseHeaders(r.ResponseHeaders), nil
	case *extprocv3.ProcessingRequest_ResponseBody:
		return x.responseBody(r.ResponseBody), nil
	case *extprocv3.ProcessingRequest_RequestTrailers:
		return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestTrailers{
			RequestTrailers: &extprocv3.TrailersResponse{}}}, nil
	case *extprocv3.ProcessingRequest_ResponseTrailers:
		// Trailers come after the last body chunk: the response is over.
		x.ended = x.status != 0
		return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ResponseTrailers{
			ResponseTrailers: &extprocv3.TrailersResponse{}}}, nil
	}
	return nil, status.Error(codes.InvalidArgument, "processing request carries no headers, body or trailers")
}

// headerMap reads an Envoy header map, lower-case names to values (the
// raw_value bytes when set, as Envoy ≥ 1.27 sends them).
func headerMap(h *corev3.HeaderMap) map[string]string {
	out := make(map[string]string, len(h.GetHeaders()))
	for _, hv := range h.GetHeaders() {
		v := hv.GetValue()
		if len(hv.GetRawValue()) > 0 {
			v = string(hv.GetRawValue())
		}
		out[lower(hv.GetKey())] = v
	}
	return out
}

func lower(s string) string {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c >= 'A' && c <= 'Z' {
			b := []byte(s)
			for j := i; j < len(b); j++ {
				if b[j] >= 'A' && b[j] <= 'Z' {
					b[j] += 'a' - 'A'
				}
			}
			return string(b)
		}
	}
	return s
}

func continueHeaders(request bool, mut *extprocv3.HeaderMutation) *extprocv3.ProcessingResponse {
	hr := &extprocv3.HeadersResponse{Response: &extprocv3.CommonResponse{HeaderMutation: mut}}
	if request {
		return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestHeaders{RequestHeaders: hr}}
	}
	return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ResponseHeaders{ResponseHeaders: hr}}
}

// finish settles a response that ended: at its usage; without one at 0
// when the provider answered an error, else at the estimate or at what
// streamed, whichever is more.
func (x *exchange) finish(ctx context.Context) {
	if x.done {
		return
	}
	if x.reader != nil {
		if u, ok := x.reader.result(x.estimate); ok {
			x.settleAt(ctx, u, outcomeUsage)
			return
		}
	}
	if x.status >= 400 {
		x.settleAt(ctx, 0, outcomeError)
		return
	}
	// Without a usage: the estimate, or more when more text was seen to
	// stream than the estimate allowed (a limit the estimate could not
	// read, a body too large to scan).
	actual := x.estimate
	if x.reader != nil && x.prompt >= 0 {
		actual = max(actual, x.prompt+(x.reader.streamed()+3)/4)
	}
	x.settleAt(ctx, actual, outcomeEstimate)
}

// abort settles a request whose stream ended before its response did (the
// client left, the upstream reset, Envoy gave up): at the prompt part of
// the estimate plus the text streamed (a token per 4 bytes), never above
// the estimate unless a usage seen so far says more, and never 0. Before
// the body was read the prompt part is unknown, and the estimate stands.
func (x *exchange) abort(ctx context.Context) {
	if x.done || x.id == "" {
		return
	}
	if x.ended {
		x.finish(ctx)
		return
	}
	if x.prompt < 0 {
		x.settleAt(ctx, x.estimate, outcomeAborted)
		return
	}
	actual := x.prompt
	if x.reader != nil {
		actual += (x.reader.streamed() + 3) / 4
	}
	actual = min(actual, x.estimate)
	if x.reader != nil {
		if u, ok := x.reader.result(x.estimate); ok {
			actual = max(actual, u)
		}
	}
	x.settleAt(ctx, max(actual, 1), outcomeAborted)
}

// settleAt settles the exchange's reservation at actual, once, on a
// context that outlives the stream's, bounded by settleTimeout. An unknown
// (or already settled, or expired) reservation is counted, not an error.
func (x *exchange) settleAt(ctx context.Context, actual int64, outcome string) {
	if x.done || x.id == "" {
		return
	}
	x.done = true
	if actual == 0 && outcome != outcomeError {
		// No estimate known (no x-leaky-estimate, no body): the reservation
		// is left to expire, which settles it at its own estimate.
		x.m.s.metrics.meter.settles.WithLabelValues(outcomeExpire).Inc()
		return
	}
	if x.reader != nil && x.reader.stripped > 0 {
		x.m.s.metrics.meter.stripped.Add(float64(x.reader.stripped))
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), settleTimeout)
	defer cancel()
	_, err := x.m.s.reserve.Settle(sctx, x.id, actual, ledger.KindMetered)
	switch {
	case errors.Is(err, ErrNoReservation):
		outcome = outcomeUnknown
	case err != nil:
		outcome = outcomeFailed
		x.m.s.log.Warn("metering: settle failed", serve.KeyError, err.Error())
	}
	x.m.s.metrics.meter.settles.WithLabelValues(outcome).Inc()
}
