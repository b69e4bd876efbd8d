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

// Beyond MaxConnections a listener stops accepting: the next connection is
// not served until one closes, on the HTTP and the gRPC listener alike.
func TestConnectionsPerListenerAreBounded(t *testing.T) {
	cfg := testConfig()
	cfg.MaxConnections = 2
	s := start(t, cfg, Options{})
	for _, tt := range []struct {
		name string
		addr string
		// served starts a conversation on c (when first) and reports
		// whether the server answered before c's read deadline.
		served func(c net.Conn, first bool) error
	}{
		{"http", s.HTTPAddr(), httpServed},
		{"grpc", s.GRPCAddr(), grpcServed},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var held []net.Conn
			for range cfg.MaxConnections {
				c := dialRaw(t, tt.addr)
				c.SetReadDeadline(time.Now().Add(10 * time.Second))
				if err := tt.served(c, true); err != nil {
					t.Fatalf("connection within the bound: %v", err)
				}
				held = append(held, c)
			}
			over := dialRaw(t, tt.addr) // the kernel completes the handshake; the server does not accept
			over.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
			var ne net.Error
			if err := tt.served(over, true); !errors.As(err, &ne) || !ne.Timeout() {
				t.Fatalf("connection beyond the bound: %v, want no answer (a read timeout)", err)
			}
			held[0].Close()
			over.SetReadDeadline(time.Now().Add(10 * time.Second))
			if err := tt.served(over, false); err != nil {
				t.Errorf("waiting connection after one closed: %v, want it served", err)
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

// httpServed sends GET /livez when first (a retry after a timeout reads the
// answer to the first) and reads the answer.
func httpServed(c net.Conn, first bool) error {
	if first {
		if _, err := io.WriteString(c, "GET /livez HTTP/1.1\r\nHost: test\r\n\r\n"); err != nil {
			return err
		}
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return errors.New(resp.Status)
	}
	return nil
}

// grpcServed sends the HTTP/2 preface when first and reads the server's
// SETTINGS.
func grpcServed(c net.Conn, first bool) error {
	if first {
		if _, err := io.WriteString(c, http2.ClientPreface); err != nil {
			return err
		}
		if err := http2.NewFramer(c, nil).WriteSettings(); err != nil {
			return err
		}
	}
	_, err := (&h2conn{Conn: c, w: http2.NewFramer(c, nil), r: http2.NewFramer(nil, c)}).settings()
	return err
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
