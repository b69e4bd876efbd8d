package loadgen

import (
	"context"
	"errors"
	"fmt"
	"sync"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"

	"github.com/leakytokens/leaky/internal/contract"
)

// AuthzOptions shape the ext_authz CheckRequest of an Authz target: one
// request, as Envoy sends it for an LLM call with the body forwarded
// (with_request_body). Token and APIKey are secrets: they go on the wire
// and nowhere else.
type AuthzOptions struct {
	Token  string // sent as "authorization: Bearer <Token>" when set
	APIKey string // sent as "x-api-key: <APIKey>" when set
	Method string // default POST
	Path   string // default /openai/v1/chat/completions (names the provider)
	Host   string // default localhost:8080
	// Body is the request body Envoy forwards; default a small OpenAI chat
	// completion (a few prompt tokens, max_tokens 16).
	Body string
}

// DefaultAuthzOptions returns a chat completion request to openai without
// credentials.
func DefaultAuthzOptions() AuthzOptions {
	return AuthzOptions{
		Method: "POST",
		Path:   "/openai/v1/chat/completions",
		Host:   "localhost:8080",
		Body:   `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say hello."}],"max_tokens":16}`,
	}
}

// Validate reports a problem with o: at most one credential may be set.
// Neither is allowed, to measure the refusal path.
func (o AuthzOptions) Validate() error {
	if o.Token != "" && o.APIKey != "" {
		return errors.New("token and api-key: set at most one")
	}
	return nil
}

// Request returns the CheckRequest o describes.
func (o AuthzOptions) Request() (*authv3.CheckRequest, error) {
	if err := o.Validate(); err != nil {
		return nil, err
	}
	d := DefaultAuthzOptions()
	for _, f := range []struct{ v, def *string }{{&o.Method, &d.Method}, {&o.Path, &d.Path}, {&o.Host, &d.Host}, {&o.Body, &d.Body}} {
		if *f.v == "" {
			*f.v = *f.def
		}
	}
	h := map[string]string{
		":method":        o.Method,
		":path":          o.Path,
		":authority":     o.Host,
		":scheme":        "http",
		"content-type":   "application/json",
		"content-length": fmt.Sprint(len(o.Body)),
	}
	if o.Token != "" {
		h["authorization"] = "Bearer " + o.Token
	}
	if o.APIKey != "" {
		h[contract.HeaderAPIKey] = o.APIKey
	}
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{
		Http: &authv3.AttributeContext_HttpRequest{
			Method: o.Method, Path: o.Path, Host: o.Host, Scheme: "http", Protocol: "HTTP/1.1",
			Headers: h, Body: o.Body, Size: int64(len(o.Body)),
		},
	}}}, nil
}

// Authz sends ext_authz Check requests and counts the answers: "OK", or
// "DENIED_<http status>" (e.g. DENIED_401), or the status code name for
// another answer. It is safe for concurrent use.
type Authz struct {
	client authv3.AuthorizationClient
	req    *authv3.CheckRequest

	mu      sync.Mutex
	answers map[string]int64
}

// NewAuthz returns a target that sends o's request over conn.
func NewAuthz(conn grpc.ClientConnInterface, o AuthzOptions) (*Authz, error) {
	req, err := o.Request()
	if err != nil {
		return nil, err
	}
	return &Authz{client: authv3.NewAuthorizationClient(conn), req: req, answers: make(map[string]int64)}, nil
}

// Do sends the request and returns the gRPC error, if any; a denial is an
// answer, not an error. i is ignored: every request is the same.
func (a *Authz) Do(ctx context.Context, _ int) error {
	resp, err := a.client.Check(ctx, a.req)
	if err != nil {
		return err
	}
	name := "OK"
	switch c := codes.Code(resp.GetStatus().GetCode()); {
	case resp.GetDeniedResponse() != nil:
		name = fmt.Sprintf("DENIED_%d", resp.GetDeniedResponse().GetStatus().GetCode())
	case c != codes.OK:
		name = c.String()
	}
	a.mu.Lock()
	a.answers[name]++
	a.mu.Unlock()
	return nil
}

// Answers returns a copy of the answers so far.
func (a *Authz) Answers() map[string]int64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	m := make(map[string]int64, len(a.answers))
	for k, v := range a.answers {
		m[k] = v
	}
	return m
}
