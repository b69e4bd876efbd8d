package serve

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"runtime"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// h2conn is a raw HTTP/2 client connection, to see what a grpc-go client
// would hide: the server's SETTINGS, refused streams, GOAWAY.
type h2conn struct {
	net.Conn
	w, r *http2.Framer // separate, so one goroutine may read while another writes
}

// dialH2 connects and sends the client preface and an empty SETTINGS.
func dialH2(t *testing.T, addr string) *h2conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if _, err := io.WriteString(c, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	h := &h2conn{Conn: c, w: http2.NewFramer(c, nil), r: http2.NewFramer(nil, c)}
	if err := h.w.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	return h
}

// settings reads the server's first frame, which must be its SETTINGS, and
// acknowledges it.
func (h *h2conn) settings() (map[http2.SettingID]uint32, error) {
	f, err := h.r.ReadFrame()
	if err != nil {
		return nil, err
	}
	sf, ok := f.(*http2.SettingsFrame)
	if !ok || sf.IsAck() {
		return nil, errors.New("first server frame is not its SETTINGS")
	}
	got := map[http2.SettingID]uint32{}
	_ = sf.ForeachSetting(func(s http2.Setting) error { got[s.ID] = s.Val; return nil })
	return got, h.w.WriteSettingsAck()
}

// openStream sends the HEADERS of a gRPC call to method and no message.
func (h *h2conn) openStream(id uint32, method string) error {
	var buf bytes.Buffer
	enc := hpack.NewEncoder(&buf)
	for _, f := range [][2]string{
		{":method", "POST"}, {":scheme", "http"}, {":path", method}, {":authority", "test"},
		{"content-type", "application/grpc"}, {"te", "trailers"},
	} {
		_ = enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	return h.w.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: buf.Bytes(), EndHeaders: true})
}

// One connection can hold at most GRPCMaxConcurrentStreams calls: the
// limit is advertised, streams beyond it are refused, and the server's
// goroutines grow with the limit, not with what the client opens.
func TestStreamsPerConnectionAreBounded(t *testing.T) {
	const limit, extra = 50, 500
	cfg := testConfig()
	cfg.GRPCMaxConcurrentStreams = limit
	s := start(t, cfg, Options{})
	h := dialH2(t, s.GRPCAddr())
	set, err := h.settings()
	if err != nil {
		t.Fatal(err)
	}
	if got, ok := set[http2.SettingMaxConcurrentStreams]; !ok || got != limit {
		t.Fatalf("advertised SETTINGS_MAX_CONCURRENT_STREAMS = %d (sent: %v), want %d", got, ok, limit)
	}
	before := runtime.NumGoroutine()
	refused := make(chan int, 1)
	go func() { // counts REFUSED_STREAM resets until extra have come or the connection ends
		n := 0
		for n < extra {
			f, err := h.r.ReadFrame()
			if err != nil {
				break
			}
			if rst, ok := f.(*http2.RSTStreamFrame); ok && rst.ErrCode == http2.ErrCodeRefusedStream {
				n++
			}
		}
		refused <- n
	}()
	for i := range limit + extra {
		// Health Watch waits for the request message, which never comes.
		if err := h.openStream(uint32(2*i+1), "/grpc.health.v1.Health/Watch"); err != nil {
			t.Fatalf("open stream %d: %v", i, err)
		}
	}
	h.SetReadDeadline(time.Now().Add(30 * time.Second))
	if n := <-refused; n != extra {
		t.Fatalf("streams refused = %d, want %d of %d beyond the limit of %d", n, extra, limit+extra, limit)
	}
	// The refusals came after the accepted streams' handlers started.
	if grown := runtime.NumGoroutine() - before; grown > limit+100 {
		t.Errorf("goroutines grew by %d for %d streams opened, want at most the limit %d + 100", grown, limit+extra, limit)
	}
}

// countingListener counts the connections a Server accepted through it:
// in all, and open (accepted, not yet closed) with the most ever open at
// once. Wrapped around a Server's bounded listener, open is what the bound
// holds down. Safe for concurrent use.
type countingListener struct {
	net.Listener
	mu                sync.Mutex
	total, open, most int
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	l.mu.Lock()
	l.total++
	l.open++
	l.most = max(l.most, l.open)
	l.mu.Unlock()
	return &countedConn{Conn: c, l: l}, nil
}

func (l *countingListener) counts() (total, open, most int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.total, l.open, l.most
}

// countedConn leaves its listener's open count when first closed, before
// the close frees the bound's slot, so the next accept cannot be counted
// while this one still is.
type countedConn struct {
	net.Conn
	l    *countingListener
	once sync.Once
}

func (c *countedConn) Close() error {
	c.once.Do(func() {
		c.l.mu.Lock()
		c.l.open--
		c.l.mu.Unlock()
	})
	return c.Conn.Close()
}

// Beyond MaxConnections a listener stops accepting: the server never holds
// more connections than the bound, and the next one is served as soon as
// one closes, on the HTTP and the gRPC listener alike.
func TestConnectionsPerListenerAreBounded(t *testing.T) {
	cfg := testConfig()
	cfg.MaxConnections = 2
	var httpCount, grpcCount *countingListener
	s := startWith(t, cfg, Options{}, func(s *Server) {
		httpCount, grpcCount = &countingListener{Listener: s.httpLis}, &countingListener{Listener: s.grpcLis}
		s.httpLis, s.grpcLis = httpCount, grpcCount
	})
	for _, tt := range []struct {
		name   string
		addr   string
		count  *countingListener
		send   func(c net.Conn) error // starts a conversation
		answer func(c net.Conn) error // reads the server's answer to it
		// roundTrip makes one more exchange on a served connection.
		roundTrip func(c net.Conn) error
	}{
		{"http", s.HTTPAddr(), httpCount, httpSend, httpAnswer, func(c net.Conn) error {
			if err := httpSend(c); err != nil {
				return err
			}
			return httpAnswer(c)
		}},
		{"grpc", s.GRPCAddr(), grpcCount, grpcSend, grpcAnswer, grpcPing},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var held []net.Conn
			for range cfg.MaxConnections {
				c := dialRaw(t, tt.addr)
				c.SetDeadline(time.Now().Add(10 * time.Second))
				if err := tt.send(c); err != nil {
					t.Fatal(err)
				}
				if err := tt.answer(c); err != nil {
					t.Fatalf("connection within the bound: %v", err)
				}
				held = append(held, c)
			}
			over := dialRaw(t, tt.addr) // the kernel completes the handshake; the server must not accept
			over.SetDeadline(time.Now().Add(10 * time.Second))
			if err := tt.send(over); err != nil { // the kernel buffers it
				t.Fatal(err)
			}
			// A round trip on a held connection after over was dialled: an
			// unbounded accept loop has had the time it takes to take over.
			if err := tt.roundTrip(held[1]); err != nil {
				t.Fatalf("round trip on a held connection: %v", err)
			}
			if total, open, most := tt.count.counts(); total != cfg.MaxConnections || most > cfg.MaxConnections {
				t.Fatalf("with %d held and one more dialled: accepted %d, open %d, most open %d; want %d accepted, never more than %d open",
					cfg.MaxConnections, total, open, most, cfg.MaxConnections, cfg.MaxConnections)
			}
			held[0].Close()
			if err := tt.answer(over); err != nil {
				t.Fatalf("waiting connection after one closed: %v, want it served", err)
			}
			if total, _, most := tt.count.counts(); total != cfg.MaxConnections+1 || most > cfg.MaxConnections {
				t.Errorf("after the waiting connection was served: accepted %d, most open %d; want %d accepted, never more than %d open",
					total, most, cfg.MaxConnections+1, cfg.MaxConnections)
			}
			for _, c := range held[1:] {
				c.Close()
			}
			over.Close()
		})
	}
}

func dialRaw(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// httpSend sends GET /livez.
func httpSend(c net.Conn) error {
	_, err := io.WriteString(c, "GET /livez HTTP/1.1\r\nHost: test\r\n\r\n")
	return err
}

// httpAnswer reads one answer, to its end, and wants it 200.
func httpAnswer(c net.Conn) error {
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	// Read to the end of the length-delimited body, so that nothing of
	// this answer is left for the next reader of c.
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return errors.New(resp.Status)
	}
	return nil
}

// grpcSend sends the HTTP/2 client preface and an empty SETTINGS.
func grpcSend(c net.Conn) error {
	if _, err := io.WriteString(c, http2.ClientPreface); err != nil {
		return err
	}
	return http2.NewFramer(c, nil).WriteSettings()
}

// grpcAnswer reads the server's SETTINGS and acknowledges them.
func grpcAnswer(c net.Conn) error {
	_, err := (&h2conn{Conn: c, w: http2.NewFramer(c, nil), r: http2.NewFramer(nil, c)}).settings()
	return err
}

// grpcPing sends a PING and reads frames until its acknowledgement.
func grpcPing(c net.Conn) error {
	data := [8]byte{'b', 'o', 'u', 'n', 'd', 'e', 'd'}
	if err := http2.NewFramer(c, nil).WritePing(false, data); err != nil {
		return err
	}
	r := http2.NewFramer(nil, c)
	for {
		f, err := r.ReadFrame()
		if err != nil {
			return err
		}
		if p, ok := f.(*http2.PingFrame); ok && p.IsAck() && p.Data == data {
			return nil
		}
	}
}

// An HTTP keep-alive connection left idle is closed after HTTPIdleTimeout.
func TestIdleHTTPConnectionIsClosed(t *testing.T) {
	cfg := testConfig()
	cfg.HTTPIdleTimeout = 300 * time.Millisecond
	s := start(t, cfg, Options{})
	c := dialRaw(t, s.HTTPAddr())
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(c)
	if _, err := io.WriteString(c, "GET /livez HTTP/1.1\r\nHost: test\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	idle := time.Now()
	_, err = br.ReadByte()
	took := time.Since(idle)
	if !errors.Is(err, io.EOF) {
		t.Fatalf("idle keep-alive connection: read = %v after %v, want EOF (closed by the server) within 10 s", err, took)
	}
	if took < cfg.HTTPIdleTimeout/2 {
		t.Errorf("idle connection closed after %v, before the idle timeout %v", took, cfg.HTTPIdleTimeout)
	}
}

// A gRPC connection with no stream is sent GOAWAY after
// GRPCMaxConnectionIdle.
func TestIdleGRPCConnectionGetsGoAway(t *testing.T) {
	cfg := testConfig()
	cfg.GRPCMaxConnectionIdle = 300 * time.Millisecond
	s := start(t, cfg, Options{})
	h := dialH2(t, s.GRPCAddr())
	h.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := h.settings(); err != nil {
		t.Fatal(err)
	}
	idle := time.Now()
	for {
		f, err := h.r.ReadFrame()
		if errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("no GOAWAY within 10 s on a connection idle for a limit of %v", cfg.GRPCMaxConnectionIdle)
		}
		if err != nil {
			t.Fatalf("read: %v (before any GOAWAY)", err)
		}
		if _, ok := f.(*http2.GoAwayFrame); ok {
			break
		}
	}
	if took := time.Since(idle); took < cfg.GRPCMaxConnectionIdle/2 {
		t.Errorf("GOAWAY after %v, before the idle limit %v", took, cfg.GRPCMaxConnectionIdle)
	}
}
