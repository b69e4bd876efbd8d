package main

import (
	"context"
	"fmt"
	"strings"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/encoding/protojson"
)

// headerList is a repeatable -H "Name: value" flag.
type headerList []string

func (h *headerList) String() string     { return strings.Join(*h, ", ") }
func (h *headerList) Set(v string) error { *h = append(*h, v); return nil }

// runAuthCheck sends one ext_authz Check, as Envoy would, and prints the
// answer as JSON.
func runAuthCheck(ctx context.Context, e env, args []string) error {
	fs := newFlagSet(e, "authcheck", "authcheck [flags]")
	addr := fs.String("addr", "127.0.0.1:9091", "authz gRPC address")
	method := fs.String("method", "POST", "HTTP method of the checked request")
	path := fs.String("path", "/openai/v1/chat/completions", "path of the checked request")
	body := fs.String("body", "", "body of the checked request (Envoy's with_request_body)")
	timeout := fs.Duration("timeout", 2*time.Second, "call deadline")
	var headers headerList
	fs.Var(&headers, "H", `request header "Name: value" (repeatable)`)
	if err := parseFlags(e, fs, args); err != nil {
		return err
	}
	hs := map[string]string{}
	for _, h := range headers {
		name, value, ok := strings.Cut(h, ":")
		if !ok {
			return fmt.Errorf("-H %q: want \"Name: value\"", h)
		}
		hs[strings.ToLower(strings.TrimSpace(name))] = strings.TrimSpace(value)
	}
	conn, err := grpc.NewClient(*addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	resp, err := authv3.NewAuthorizationClient(conn).Check(ctx, &authv3.CheckRequest{
		Attributes: &authv3.AttributeContext{
			Source: &authv3.AttributeContext_Peer{Address: &corev3.Address{Address: &corev3.Address_SocketAddress{
				SocketAddress: &corev3.SocketAddress{Address: "127.0.0.1"},
			}}},
			Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
				Method: *method, Path: *path, Host: "localhost:8080", Scheme: "http", Protocol: "HTTP/1.1",
				Headers: hs, Body: *body, Size: int64(len(*body)),
			}},
		},
	})
	if err != nil {
		return fmt.Errorf("check: %w", err)
	}
	out, err := protojson.MarshalOptions{Multiline: true, Indent: "  "}.Marshal(resp)
	if err != nil {
		return err
	}
	fmt.Fprintln(e.stdout, string(out))
	return nil
}
