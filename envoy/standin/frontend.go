package standin

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"
)

// frontend owns the gateway's listening socket. Connections go to the
// current http.Server; when the connection manager's server settings change
// (timeouts, header bound, codecs) a new server takes the new connections
// and the old one drains, as Envoy drains a changed listener. The socket
// itself never closes until the end, so the address stays the same.
type frontend struct {
	lis     net.Listener
	handler http.Handler
	log     *slog.Logger
	grace   time.Duration

	mu      sync.Mutex
	cur     *slot
	stopped bool
	wg      sync.WaitGroup // servers serving and draining
}

// slot is one http.Server and the listener that feeds it.
type slot struct {
	srv      *http.Server
	lis      *chanListener
	settings serverSettings
}

// chanListener hands the frontend's connections to one http.Server.
type chanListener struct {
	addr  net.Addr
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
}

func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *chanListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *chanListener) Addr() net.Addr { return l.addr }

// bootSettings serve until the first configuration: Envoy's defaults.
func bootSettings() serverSettings {
	return serverSettings{http1: true, idleTimeout: time.Hour, headersTimeout: 10 * time.Second, maxHeaderBytes: defaultMaxRequestHeaders}
}

// use makes s the settings of the server new connections go to.
func (f *frontend) use(s serverSettings) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.stopped || f.cur != nil && f.cur.settings == s {
		return
	}
	srv := &http.Server{
		Handler:           f.handler,
		ReadHeaderTimeout: s.headersTimeout,
		IdleTimeout:       s.idleTimeout,
		MaxHeaderBytes:    s.maxHeaderBytes,
		Protocols:         new(http.Protocols),
		ErrorLog:          slog.NewLogLogger(f.log.Handler(), slog.LevelDebug),
	}
	srv.Protocols.SetHTTP1(s.http1)
	srv.Protocols.SetUnencryptedHTTP2(s.h2c)
	next := &slot{srv: srv, settings: s, lis: &chanListener{addr: f.lis.Addr(), conns: make(chan net.Conn), done: make(chan struct{})}}
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		if err := srv.Serve(next.lis); err != nil && !errors.Is(err, http.ErrServerClosed) {
			f.log.Error("gateway server stopped", "error", err)
		}
	}()
	if old := f.cur; old != nil {
		f.drain(old)
	}
	f.cur = next
}

// drain stops a server gracefully within the grace period. The caller
// holds f.mu.
func (f *frontend) drain(s *slot) {
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		ctx, cancel := context.WithTimeout(context.Background(), f.grace)
		defer cancel()
		if err := s.srv.Shutdown(ctx); err != nil {
			s.srv.Close()
		}
	}()
}

func (f *frontend) current() *slot {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.cur
}

// serve accepts connections until ctx ends, then closes the socket and
// drains the current server; it returns once every server has stopped.
func (f *frontend) serve(ctx context.Context) error {
	accepted := make(chan struct{})
	go func() {
		defer close(accepted)
		f.accept()
	}()
	<-ctx.Done()
	f.lis.Close()
	<-accepted
	f.mu.Lock()
	f.stopped = true
	if f.cur != nil {
		f.drain(f.cur)
	}
	f.mu.Unlock()
	f.wg.Wait()
	return nil
}

func (f *frontend) accept() {
	for {
		c, err := f.lis.Accept()
		if err != nil {
			return
		}
		f.handOver(c)
	}
}

// handOver gives c to the current server, or to its successor when it is
// being replaced.
func (f *frontend) handOver(c net.Conn) {
	for {
		s := f.current()
		select {
		case s.lis.conns <- c:
			return
		case <-s.lis.done:
			if f.current() == s { // stopping: nobody takes it
				c.Close()
				return
			}
		}
	}
}
