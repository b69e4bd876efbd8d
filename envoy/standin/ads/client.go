// Package ads is a state-of-the-world client of Envoy's Aggregated
// Discovery Service (envoy.service.discovery.v3.AggregatedDiscoveryService),
// the way Envoy itself speaks it: one stream for every resource type, a
// DiscoveryRequest per type naming the resources wanted (none: a wildcard),
// an ACK (version_info and response_nonce of the response) or a NACK (the
// last accepted version_info, the response's nonce and error_detail) for
// every response, and a new stream with jittered exponential backoff when
// the stream ends. What the resources mean is the Handler's business.
package ads

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	statuspb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/anypb"
)

// Handler turns responses into configuration.
type Handler interface {
	// Handle is given every resource of one response for typeURL, and the
	// response's version. A nil error ACKs the response; an error NACKs it
	// with the error's text, and the Handler keeps what it had before.
	// Handle is called from one goroutine at a time.
	Handle(typeURL, version string, resources []*anypb.Any) error
	// Subscriptions is what to ask for now, in the order to ask for it. It
	// is consulted after every Handle, and a type whose names changed is
	// asked for again.
	Subscriptions() []Subscription
}

// Subscription is the resources of one type a client wants.
type Subscription struct {
	TypeURL string
	// Names are the resources wanted, sorted. Nil is a wildcard (every
	// resource of the type); an empty non-nil slice wants nothing yet and
	// sends no request.
	Names []string
}

// Config is how a Client reaches and names itself to the control plane.
type Config struct {
	Node *corev3.Node
	// MinBackoff and MaxBackoff bound the wait before a new stream (full
	// jitter: a random wait below an interval that doubles from MinBackoff
	// to MaxBackoff). MaxBackoff also caps the wait before repeating a NACK
	// of the same version (see Client).
	MinBackoff, MaxBackoff time.Duration
}

// Client keeps one ADS stream open at a time until Run's context ends.
// Accepted versions survive a new stream, so the control plane learns what
// the client already has. A control plane that answers a NACK by sending
// the same version again (go-control-plane's snapshot cache does) gets the
// repeated NACK after a delay that doubles up to MaxBackoff, so that a bad
// configuration is not a busy loop on either side.
type Client struct {
	conn grpc.ClientConnInterface
	cfg  Config
	h    Handler
	log  *slog.Logger

	accepted map[string]string // type URL → the last version ACKed
}

// New returns a Client of the control plane behind conn. It does no I/O.
func New(conn grpc.ClientConnInterface, cfg Config, h Handler, logger *slog.Logger) *Client {
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = 250 * time.Millisecond
	}
	if cfg.MaxBackoff < cfg.MinBackoff {
		cfg.MaxBackoff = max(cfg.MinBackoff, 5*time.Second)
	}
	return &Client{conn: conn, cfg: cfg, h: h, log: logger, accepted: map[string]string{}}
}

// Run streams until ctx ends, opening a new stream after each one ends. It
// returns nil when ctx ends.
func (c *Client) Run(ctx context.Context) error {
	bo := backoff{min: c.cfg.MinBackoff, max: c.cfg.MaxBackoff}
	for {
		got, err := c.stream(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if got {
			bo.reset()
		}
		wait := bo.next()
		c.log.Warn("xds stream ended; reconnecting", "error", err, "retry_in", wait)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
	}
}

// backoff is full-jitter exponential backoff.
type backoff struct {
	min, max, cur time.Duration
}

func (b *backoff) reset() { b.cur = 0 }

func (b *backoff) next() time.Duration {
	if b.cur == 0 {
		b.cur = b.min
	} else {
		b.cur = min(2*b.cur, b.max)
	}
	return time.Duration(rand.Int64N(int64(b.cur)) + 1)
}

// typeState is one type's protocol state on one stream.
type typeState struct {
	sent      bool     // a request went out on this stream
	names     []string // what it asked for
	wildcard  bool
	nonce     string // the last response's nonce
	nacked    string // the version last NACKed; "" after an ACK
	nackDelay time.Duration
	pending   *statuspb.Status // a NACK waiting for its timer
	timer     *time.Timer
}

// session is one stream.
type session struct {
	c     *Client
	st    discoveryv3.AggregatedDiscoveryService_StreamAggregatedResourcesClient
	types map[string]*typeState
	fire  chan string // type URLs whose delayed NACK is due
}

// stream runs one stream until it fails or ctx ends; got says whether a
// response arrived (the control plane was there).
func (c *Client) stream(ctx context.Context) (got bool, err error) {
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	st, err := discoveryv3.NewAggregatedDiscoveryServiceClient(c.conn).StreamAggregatedResources(sctx)
	if err != nil {
		return false, fmt.Errorf("open stream: %w", err)
	}
	s := &session{c: c, st: st, types: map[string]*typeState{}, fire: make(chan string, 16)}
	defer s.stopTimers()
	if err := s.sync(); err != nil {
		return false, err
	}
	recv := make(chan *discoveryv3.DiscoveryResponse)
	recvErr := make(chan error, 1)
	go func() {
		for {
			r, err := st.Recv()
			if err != nil {
				recvErr <- err
				return
			}
			select {
			case recv <- r:
			case <-sctx.Done():
				recvErr <- sctx.Err()
				return
			}
		}
	}()
	defer func() { cancel(); <-recvErr }()
	for {
		select {
		case <-ctx.Done():
			return got, ctx.Err()
		case err := <-recvErr:
			recvErr <- err // for the deferred wait
			return got, fmt.Errorf("receive: %w", err)
		case r := <-recv:
			got = true
			if err := s.respond(r); err != nil {
				return got, err
			}
		case typeURL := <-s.fire:
			if err := s.sendPendingNACK(typeURL); err != nil {
				return got, err
			}
		}
	}
}

// respond handles one response: ACK or NACK, then any change of
// subscriptions it caused.
func (s *session) respond(r *discoveryv3.DiscoveryResponse) error {
	ts, ok := s.types[r.GetTypeUrl()]
	if !ok {
		s.c.log.Warn("xds response for a type not asked for; ignored", "type_url", r.GetTypeUrl())
		return nil
	}
	ts.nonce = r.GetNonce()
	s.cancelPending(ts)
	err := s.c.h.Handle(r.GetTypeUrl(), r.GetVersionInfo(), r.GetResources())
	if err == nil {
		s.c.accepted[r.GetTypeUrl()] = r.GetVersionInfo()
		ts.nacked, ts.nackDelay = "", 0
		if err := s.send(r.GetTypeUrl(), ts, nil); err != nil {
			return err
		}
		return s.sync()
	}
	s.c.log.Warn("xds update rejected", "type_url", r.GetTypeUrl(), "version", r.GetVersionInfo(), "error", err)
	detail := &statuspb.Status{Code: int32(codes.InvalidArgument), Message: err.Error()}
	if ts.nacked != r.GetVersionInfo() {
		ts.nacked, ts.nackDelay = r.GetVersionInfo(), 0
		return s.send(r.GetTypeUrl(), ts, detail)
	}
	// The same version again: answer it later.
	ts.nackDelay = min(max(2*ts.nackDelay, time.Second), s.c.cfg.MaxBackoff)
	ts.pending = detail
	typeURL := r.GetTypeUrl()
	ts.timer = time.AfterFunc(ts.nackDelay, func() {
		select {
		case s.fire <- typeURL:
		default: // the stream is gone or a send is already due
		}
	})
	return nil
}

func (s *session) cancelPending(ts *typeState) {
	if ts.timer != nil {
		ts.timer.Stop()
		ts.timer = nil
	}
	ts.pending = nil
}

func (s *session) stopTimers() {
	for _, ts := range s.types {
		s.cancelPending(ts)
	}
}

func (s *session) sendPendingNACK(typeURL string) error {
	ts := s.types[typeURL]
	if ts == nil || ts.pending == nil {
		return nil
	}
	detail := ts.pending
	ts.pending, ts.timer = nil, nil
	return s.send(typeURL, ts, detail)
}

// sync sends a request for every subscription not yet sent on this stream
// or whose names changed.
func (s *session) sync() error {
	for _, sub := range s.c.h.Subscriptions() {
		wildcard := sub.Names == nil
		if !wildcard && len(sub.Names) == 0 {
			continue
		}
		ts := s.types[sub.TypeURL]
		if ts == nil {
			ts = &typeState{}
			s.types[sub.TypeURL] = ts
		}
		if ts.sent && ts.wildcard == wildcard && slices.Equal(ts.names, sub.Names) {
			continue
		}
		ts.names, ts.wildcard = slices.Clone(sub.Names), wildcard
		if err := s.send(sub.TypeURL, ts, nil); err != nil {
			return err
		}
	}
	return nil
}

// send sends the request for one type: its names, the version last
// accepted, the nonce of the response it answers, and detail for a NACK.
func (s *session) send(typeURL string, ts *typeState, detail *statuspb.Status) error {
	req := &discoveryv3.DiscoveryRequest{
		VersionInfo:   s.c.accepted[typeURL],
		Node:          s.c.cfg.Node,
		ResourceNames: ts.names,
		TypeUrl:       typeURL,
		ResponseNonce: ts.nonce,
		ErrorDetail:   detail,
	}
	if err := s.st.Send(req); err != nil {
		return fmt.Errorf("send %s request: %w", typeURL, err)
	}
	ts.sent = true
	return nil
}
