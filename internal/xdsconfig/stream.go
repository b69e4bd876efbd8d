package xdsconfig

import (
	"context"
	"errors"
	"fmt"
	"io"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	statuspb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
)

// session runs one stream: the first request of each subscription, then a
// response and its ACK or NACK at a time, until the stream fails or ctx
// ends. It reports whether any response arrived.
func (s *Subscriber) session(ctx context.Context) (received bool, err error) {
	creds, err := s.credentials()
	if err != nil {
		return false, err
	}
	conn, err := grpc.NewClient(s.addr, grpc.WithTransportCredentials(creds),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxRecvMsg)))
	if err != nil {
		return false, fmt.Errorf("dial %s: %w", s.addr, err)
	}
	defer conn.Close()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
	if err != nil {
		return false, fmt.Errorf("open stream: %w", err)
	}
	for _, sub := range s.subscriptions() {
		if err := stream.Send(s.request(sub, s.versionOf(sub), "", nil)); err != nil {
			return false, fmt.Errorf("send: %w", streamErr(stream, err))
		}
	}
	s.m.connected.Set(1)
	defer s.m.connected.Set(0)
	s.log.Info("xds config stream open", keyAddr, s.addr, keyVersion, s.Version())
	for {
		resp, err := stream.Recv()
		if err != nil {
			return received, fmt.Errorf("receive: %w", err)
		}
		received = true
		req, pause := s.handle(resp)
		if req == nil {
			continue
		}
		if pause > 0 && !sleep(ctx, pause) {
			return received, ctx.Err()
		}
		if err := stream.Send(req); err != nil {
			return received, fmt.Errorf("send: %w", streamErr(stream, err))
		}
	}
}

// credentials are plain text, or TLS from the files as they are now.
func (s *Subscriber) credentials() (credentials.TransportCredentials, error) {
	if s.tls == nil {
		return insecure.NewCredentials(), nil
	}
	cfg, err := s.tls.Config()
	if err != nil {
		return nil, err
	}
	return credentials.NewTLS(cfg), nil
}

// streamErr is the stream's status when Send reports only io.EOF.
func streamErr(stream discoveryv3.AggregatedDiscoveryService_StreamAggregatedResourcesClient, err error) error {
	if errors.Is(err, io.EOF) {
		if _, rerr := stream.Recv(); rerr != nil {
			return rerr
		}
	}
	return err
}

// request is a subscription's request: the first (nonce empty), an ACK
// (nack nil) or a NACK carrying nack's text.
func (s *Subscriber) request(sub *subscription, version, nonce string, nack error) *discoveryv3.DiscoveryRequest {
	r := &discoveryv3.DiscoveryRequest{
		VersionInfo:   version,
		Node:          s.node,
		ResourceNames: sub.names,
		TypeUrl:       sub.typeURL,
		ResponseNonce: nonce,
	}
	if nack != nil {
		r.ErrorDetail = &statuspb.Status{Code: int32(codes.InvalidArgument), Message: nack.Error()}
	}
	return r
}
