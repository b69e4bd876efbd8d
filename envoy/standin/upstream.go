package standin

import (
	"context"
	"errors"
	"net"
	"net/http"
	"slices"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/resolver/manual"
)

// upstream is the runtime of one cluster: its endpoints, the round robin,
// outlier detection, circuit breakers and connections. It outlives the
// configurations that name it (counters, ejections and connections carry
// over an update) and is safe for concurrent use.
type upstream struct {
	name    string
	created time.Time // outlier detection's interval ticks count from here

	mu        sync.Mutex
	cfg       *clusterConfig
	hosts     []*host
	next      int
	transport *http.Transport
	conn      *grpc.ClientConn
	resolver  *manual.Resolver
	requests  int // in flight (max_requests)
	retries   int // retries in flight (max_retries)
	conns     int // connections in use (max_connections: one request each, as HTTP/1.1)
	waiters   []chan struct{}
}

// host is one endpoint and its outlier-detection state.
type host struct {
	addr         string
	consecutive  int       // consecutive 5xx (and connect failures, resets)
	ejections    int       // times ejected, decayed while healthy
	until        time.Time // ejected until; zero: not ejected
	healthySince time.Time
}

// errOverflow is a circuit breaker's refusal.
var errOverflow = errors.New("upstream overflow")

func newUpstream(name string, now time.Time) *upstream {
	return &upstream{name: name, created: now}
}

// update installs a cluster's settings and endpoints; hosts that stay keep
// their outlier state.
func (u *upstream) update(cfg *clusterConfig, addrs []string) {
	u.mu.Lock()
	defer u.mu.Unlock()
	old := u.cfg
	u.cfg = cfg
	byAddr := map[string]*host{}
	for _, h := range u.hosts {
		byAddr[h.addr] = h
	}
	u.hosts = u.hosts[:0:0]
	for _, a := range addrs {
		h := byAddr[a]
		if h == nil {
			h = &host{addr: a}
		}
		u.hosts = append(u.hosts, h)
	}
	if old == nil || old.connectTimeout != cfg.connectTimeout || old.http2 != cfg.http2 {
		if u.transport != nil {
			u.transport.CloseIdleConnections()
		}
		u.transport = newTransport(cfg)
		if u.conn != nil {
			u.conn.Close()
			u.conn, u.resolver = nil, nil
		}
	}
	if u.resolver != nil {
		u.resolver.UpdateState(resolverState(addrs))
	}
}

func newTransport(cfg *clusterConfig) *http.Transport {
	d := &net.Dialer{Timeout: cfg.connectTimeout, KeepAlive: 30 * time.Second}
	t := &http.Transport{
		DialContext:         d.DialContext,
		MaxIdleConns:        1024,
		MaxIdleConnsPerHost: 256,
		IdleConnTimeout:     time.Hour, // Envoy's upstream idle_timeout
		DisableCompression:  true,      // a proxy passes the encoding through
	}
	if cfg.http2 {
		t.Protocols = new(http.Protocols)
		t.Protocols.SetUnencryptedHTTP2(true)
	}
	return t
}

func resolverState(addrs []string) resolver.State {
	s := resolver.State{}
	for _, a := range addrs {
		s.Addresses = append(s.Addresses, resolver.Address{Addr: a})
	}
	return s
}

// close releases the cluster's connections.
func (u *upstream) close() {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.transport != nil {
		u.transport.CloseIdleConnections()
	}
	if u.conn != nil {
		u.conn.Close()
		u.conn, u.resolver = nil, nil
	}
}

// grpcConn is the cluster's gRPC connection (round robin over its
// endpoints, which follow EDS), made on first use.
func (u *upstream) grpcConn() (*grpc.ClientConn, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.conn != nil {
		return u.conn, nil
	}
	r := manual.NewBuilderWithScheme("standin")
	addrs := make([]string, len(u.hosts))
	for i, h := range u.hosts {
		addrs[i] = h.addr
	}
	r.UpdateState(resolverState(addrs))
	conn, err := grpc.NewClient("standin:///"+u.name,
		grpc.WithResolvers(r),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultServiceConfig(`{"loadBalancingConfig":[{"round_robin":{}}]}`),
		grpc.WithConnectParams(grpc.ConnectParams{Backoff: backoff.DefaultConfig, MinConnectTimeout: u.cfg.connectTimeout}),
	)
	if err != nil {
		return nil, err
	}
	u.conn, u.resolver = conn, r
	return conn, nil
}

// admit takes a request slot (max_requests); the caller calls the
// returned release once the request is over.
func (u *upstream) admit() (release func(), err error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.requests >= u.cfg.limits.maxRequests {
		return nil, errOverflow
	}
	u.requests++
	return sync.OnceFunc(func() {
		u.mu.Lock()
		u.requests--
		u.mu.Unlock()
	}), nil
}

// admitRetry takes a retry slot (max_retries): false means no retry now.
func (u *upstream) admitRetry() (release func(), ok bool) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.retries >= u.cfg.limits.maxRetries {
		return nil, false
	}
	u.retries++
	return sync.OnceFunc(func() {
		u.mu.Lock()
		u.retries--
		u.mu.Unlock()
	}), true
}

// connection takes a connection slot (max_connections), waiting as a
// pending request (max_pending_requests) while none is free.
func (u *upstream) connection(ctx context.Context) (release func(), err error) {
	u.mu.Lock()
	if u.conns < u.cfg.limits.maxConnections {
		u.conns++
		u.mu.Unlock()
		return sync.OnceFunc(u.releaseConnection), nil
	}
	if len(u.waiters) >= u.cfg.limits.maxPending {
		u.mu.Unlock()
		return nil, errOverflow
	}
	ch := make(chan struct{})
	u.waiters = append(u.waiters, ch)
	u.mu.Unlock()
	select {
	case <-ch: // the slot was handed over
		return sync.OnceFunc(u.releaseConnection), nil
	case <-ctx.Done():
		u.mu.Lock()
		i := slices.Index(u.waiters, ch)
		if i >= 0 {
			u.waiters = slices.Delete(u.waiters, i, i+1)
		}
		u.mu.Unlock()
		if i < 0 { // handed over just as the context ended: give it back
			u.releaseConnection()
		}
		return nil, ctx.Err()
	}
}

func (u *upstream) releaseConnection() {
	u.mu.Lock()
	defer u.mu.Unlock()
	if len(u.waiters) > 0 {
		close(u.waiters[0])
		u.waiters = u.waiters[1:]
		return
	}
	u.conns--
}
