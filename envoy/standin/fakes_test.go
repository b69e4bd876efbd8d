package standin

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	extprocsvcv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"

	"github.com/leakytokens/leaky/internal/contract"
)

// serveGRPC runs a gRPC server on 127.0.0.1:0 until the test ends.
func serveGRPC(t *testing.T, register func(*grpc.Server)) string {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer()
	register(s)
	go s.Serve(lis)
	t.Cleanup(s.Stop)
	return lis.Addr().String()
}

// fakeAuthz is an ext_authz server recording every CheckRequest and
// answering with answer (default: OK with the identity headers authz sets,
// the org header only when the client named org "acme").
type fakeAuthz struct {
	authv3.UnimplementedAuthorizationServer
	addr string

	mu     sync.Mutex
	got    []*authv3.CheckRequest
	answer func(context.Context, *authv3.CheckRequest) (*authv3.CheckResponse, error)
}

var _ authv3.AuthorizationServer = (*fakeAuthz)(nil)

func newFakeAuthz(t *testing.T) *fakeAuthz {
	f := &fakeAuthz{answer: identityOK}
	f.addr = serveGRPC(t, func(s *grpc.Server) { authv3.RegisterAuthorizationServer(s, f) })
	return f
}

func (f *fakeAuthz) Check(ctx context.Context, r *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	f.mu.Lock()
	f.got = append(f.got, r)
	answer := f.answer
	f.mu.Unlock()
	return answer(ctx, r)
}

func (f *fakeAuthz) setAnswer(a func(context.Context, *authv3.CheckRequest) (*authv3.CheckResponse, error)) {
	f.mu.Lock()
	f.answer = a
	f.mu.Unlock()
}

func (f *fakeAuthz) requests() []*authv3.CheckRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]*authv3.CheckRequest(nil), f.got...)
}

func setHeader(k, v string) *corev3.HeaderValueOption {
	return &corev3.HeaderValueOption{Header: &corev3.HeaderValue{Key: k, Value: v}, AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD}
}

// identityOK answers as authz does for user u1 on tier free, the provider
// named by the path's first segment, estimate 42.
func identityOK(_ context.Context, r *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	h := r.GetAttributes().GetRequest().GetHttp()
	provider := strings.Split(strings.TrimPrefix(h.GetPath(), "/"), "/")[0]
	set := []*corev3.HeaderValueOption{
		setHeader(contract.HeaderUserID, "u1"), setHeader(contract.HeaderTier, "free"),
		setHeader(contract.HeaderProvider, provider), setHeader(contract.HeaderEstimate, "42"),
	}
	if h.GetHeaders()[contract.HeaderOrg] == "acme" {
		set = append(set, setHeader(contract.HeaderOrgID, "org-acme"))
	}
	return &authv3.CheckResponse{
		Status: &status.Status{},
		HttpResponse: &authv3.CheckResponse_OkResponse{OkResponse: &authv3.OkHttpResponse{
			Headers: set, HeadersToRemove: []string{contract.HeaderAPIKey},
			ResponseHeadersToAdd: []*corev3.HeaderValueOption{setHeader("x-authz-said", "ok")},
		}},
	}, nil
}

// fakeRLS is a RateLimitService recording every request and answering with
// answer (default: OK with one status).
type fakeRLS struct {
	rlsv3.UnimplementedRateLimitServiceServer
	addr string

	mu     sync.Mutex
	got    []*rlsv3.RateLimitRequest
	answer func(context.Context, *rlsv3.RateLimitRequest) (*rlsv3.RateLimitResponse, error)
}

var _ rlsv3.RateLimitServiceServer = (*fakeRLS)(nil)

// newFakeRLS serves the fake with proc's ExternalProcessor beside it, on
// one listener, as the ratelimit service serves both.
func newFakeRLS(t *testing.T, proc *fakeProc) *fakeRLS {
	f := &fakeRLS{answer: func(context.Context, *rlsv3.RateLimitRequest) (*rlsv3.RateLimitResponse, error) {
		return &rlsv3.RateLimitResponse{OverallCode: rlsv3.RateLimitResponse_OK}, nil
	}}
	f.addr = serveGRPC(t, func(s *grpc.Server) {
		rlsv3.RegisterRateLimitServiceServer(s, f)
		extprocsvcv3.RegisterExternalProcessorServer(s, proc)
	})
	return f
}

// fakeProc is an ExternalProcessor recording every stream's messages and
// how it ended ("eof": the gateway half-closed it; "cancelled": its context
// ended first). answer makes each reply: a nil reply stalls the stream
// until its context ends, an error ends the stream with it.
type fakeProc struct {
	extprocsvcv3.UnimplementedExternalProcessorServer

	mu      sync.Mutex
	streams []*procStream
	answer  func(*extprocsvcv3.ProcessingRequest) (*extprocsvcv3.ProcessingResponse, error)
}

type procStream struct {
	got   []*extprocsvcv3.ProcessingRequest
	ended string
}

func (f *fakeProc) Process(s extprocsvcv3.ExternalProcessor_ProcessServer) error {
	st := &procStream{}
	f.mu.Lock()
	f.streams = append(f.streams, st)
	f.mu.Unlock()
	end := func(how string, err error) error {
		f.mu.Lock()
		st.ended = how
		f.mu.Unlock()
		return err
	}
	for {
		req, err := s.Recv()
		if errors.Is(err, io.EOF) {
			return end("eof", nil)
		}
		if err != nil {
			return end("cancelled", err)
		}
		f.mu.Lock()
		st.got = append(st.got, req)
		answer := f.answer
		f.mu.Unlock()
		resp, err := answer(req)
		if err != nil {
			return end("failed", err)
		}
		if resp == nil {
			<-s.Context().Done()
			return end("cancelled", s.Context().Err())
		}
		if err := s.Send(resp); err != nil {
			return end("cancelled", err)
		}
	}
}

func (f *fakeProc) setAnswer(a func(*extprocsvcv3.ProcessingRequest) (*extprocsvcv3.ProcessingResponse, error)) {
	f.mu.Lock()
	f.answer = a
	f.mu.Unlock()
}

// snapshot is a copy of every stream so far.
func (f *fakeProc) snapshot() []procStream {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]procStream, len(f.streams))
	for i, s := range f.streams {
		out[i] = procStream{got: slices.Clone(s.got), ended: s.ended}
	}
	return out
}

// continueAll answers every message with an empty CONTINUE of its kind.
func continueAll(req *extprocsvcv3.ProcessingRequest) (*extprocsvcv3.ProcessingResponse, error) {
	return answerWith(req, &extprocsvcv3.CommonResponse{}), nil
}

// answerWith answers req with cr in the response of req's kind.
func answerWith(req *extprocsvcv3.ProcessingRequest, cr *extprocsvcv3.CommonResponse) *extprocsvcv3.ProcessingResponse {
	switch req.GetRequest().(type) {
	case *extprocsvcv3.ProcessingRequest_RequestHeaders:
		return &extprocsvcv3.ProcessingResponse{Response: &extprocsvcv3.ProcessingResponse_RequestHeaders{RequestHeaders: &extprocsvcv3.HeadersResponse{Response: cr}}}
	case *extprocsvcv3.ProcessingRequest_ResponseHeaders:
		return &extprocsvcv3.ProcessingResponse{Response: &extprocsvcv3.ProcessingResponse_ResponseHeaders{ResponseHeaders: &extprocsvcv3.HeadersResponse{Response: cr}}}
	case *extprocsvcv3.ProcessingRequest_RequestBody:
		return &extprocsvcv3.ProcessingResponse{Response: &extprocsvcv3.ProcessingResponse_RequestBody{RequestBody: &extprocsvcv3.BodyResponse{Response: cr}}}
	}
	return &extprocsvcv3.ProcessingResponse{Response: &extprocsvcv3.ProcessingResponse_ResponseBody{ResponseBody: &extprocsvcv3.BodyResponse{Response: cr}}}
}

func (f *fakeRLS) ShouldRateLimit(ctx context.Context, r *rlsv3.RateLimitRequest) (*rlsv3.RateLimitResponse, error) {
	f.mu.Lock()
	f.got = append(f.got, r)
	answer := f.answer
	f.mu.Unlock()
	return answer(ctx, r)
}

func (f *fakeRLS) setAnswer(a func(context.Context, *rlsv3.RateLimitRequest) (*rlsv3.RateLimitResponse, error)) {
	f.mu.Lock()
	f.answer = a
	f.mu.Unlock()
}

func (f *fakeRLS) requests() []*rlsv3.RateLimitRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]*rlsv3.RateLimitRequest(nil), f.got...)
}

// seen is one request an upstream received.
type seen struct {
	method, uri string
	header      http.Header
	body        string
}

// recorder is an httptest upstream recording every request and answering
// with handler (default: 200 "ok from upstream").
type recorder struct {
	srv *httptest.Server

	mu      sync.Mutex
	got     []seen
	handler http.HandlerFunc
}

func newRecorder(t *testing.T) *recorder {
	r := &recorder{handler: func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok from upstream") }}
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		b, _ := io.ReadAll(req.Body)
		r.mu.Lock()
		r.got = append(r.got, seen{method: req.Method, uri: req.RequestURI, header: req.Header.Clone(), body: string(b)})
		h := r.handler
		r.mu.Unlock()
		h(w, req)
	}))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *recorder) addr() string { return r.srv.Listener.Addr().String() }

func (r *recorder) setHandler(h http.HandlerFunc) {
	r.mu.Lock()
	r.handler = h
	r.mu.Unlock()
}

func (r *recorder) requests() []seen {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]seen(nil), r.got...)
}
