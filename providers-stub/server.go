package providersstub

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"runtime/debug"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/sync/errgroup"

	"github.com/leakytokens/leaky/internal/serve"
)

// Server serves every configured provider, each on its own listener. New
// binds the listeners, so Addrs is known before Run; Run serves until its
// context ends. A Server whose Run is never called must be closed with
// Close.
type Server struct {
	cfg      Config
	log      *slog.Logger
	metrics  *metrics
	faults   *faults
	inflight *serve.Inflight

	listeners map[string]net.Listener
	servers   map[string]*http.Server
}

// New validates cfg and binds every provider's address.
func New(cfg Config, logger *slog.Logger) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	s := &Server{
		cfg: cfg, log: logger, metrics: newMetrics(),
		faults:    newFaults(cfg.ErrorSeed, cfg.FailFirstMemory),
		inflight:  serve.NewInflight(),
		listeners: map[string]net.Listener{}, servers: map[string]*http.Server{},
	}
	for name, addr := range cfg.addrs() {
		lis, err := net.Listen("tcp", addr)
		if err != nil {
			s.Close()
			return nil, fmt.Errorf("%s listen: %w", name, err)
		}
		s.listeners[name] = lis
		p := providerOf(name)
		s.servers[name] = &http.Server{
			Handler:           s.inflight.Track(handler{s: s, p: p}, stopping(p.dialect)),
			ReadHeaderTimeout: 10 * time.Second,
			ReadTimeout:       time.Minute, // the body; no write timeout, for long streams
			IdleTimeout:       time.Minute,
			MaxHeaderBytes:    64 << 10,
			ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
		}
	}
	return s, nil
}

// Addrs returns the bound address of every provider served, by provider
// name (OpenAI, Gemini, Qwen): what a registry (Consul) is told.
func (s *Server) Addrs() map[string]string {
	out := make(map[string]string, len(s.listeners))
	for name, lis := range s.listeners {
		out[name] = lis.Addr().String()
	}
	return out
}

// Close releases the listeners of a Server that will not Run.
func (s *Server) Close() {
	for _, lis := range s.listeners {
		lis.Close()
	}
}

// Run serves until ctx ends, then stops gracefully: no new connections,
// open requests may finish within ShutdownGrace, after which they are cut
// (their contexts cancelled). It returns once every handler has returned:
// nil after a clean stop, or the error that made a listener fail.
func (s *Server) Run(ctx context.Context) error {
	base, cut := context.WithCancel(context.WithoutCancel(ctx))
	defer cut()
	g, gctx := errgroup.WithContext(ctx)
	for name, srv := range s.servers {
		srv.BaseContext = func(net.Listener) context.Context { return base }
		lis := s.listeners[name]
		g.Go(func() error {
			if err := srv.Serve(lis); err != nil && !errors.Is(err, http.ErrServerClosed) {
				return fmt.Errorf("%s serve: %w", name, err)
			}
			return nil
		})
	}
	g.Go(func() error {
		<-gctx.Done()
		s.stop(cut)
		return nil
	})
	attrs := []any{}
	for _, name := range slices.Sorted(maps.Keys(s.listeners)) {
		attrs = append(attrs, name+"_addr", s.listeners[name].Addr().String())
	}
	s.log.Info("serving", attrs...)
	return g.Wait()
}

// stop shuts every server down within ShutdownGrace, then cuts what is
// still open and waits for the handlers.
func (s *Server) stop(cut context.CancelFunc) {
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.ShutdownGrace)
	defer cancel()
	var wg sync.WaitGroup
	for _, srv := range s.servers {
		wg.Go(func() {
			if err := srv.Shutdown(ctx); err != nil {
				cut()
				srv.Close()
			}
		})
	}
	wg.Wait()
	cut()
	s.inflight.CloseAndWait()
}

// handler answers one provider's listener.
type handler struct {
	s *Server
	p provider
}

var _ http.Handler = handler{}

func (h handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case "/healthz":
		h.healthz(w, r)
		return
	case "/metrics":
		h.metricsz(w, r)
		return
	}
	rt, found := h.p.route(r.URL.Path)
	rec := &recorder{ResponseWriter: w}
	defer func() { h.s.metrics.request(h.p.name, rt.api, rec.status()) }()
	defer h.recover(rec, r) // before the line above: a bug is counted as the 500 it answers
	c := &call{s: h.s, p: h.p, w: rec, r: r}
	switch {
	case !found:
		c.fail(apiError{status: http.StatusNotFound, message: h.p.notFound(r)})
	case r.Method != http.MethodPost:
		rec.Header().Set("Allow", http.MethodPost)
		c.fail(apiError{status: http.StatusMethodNotAllowed, message: "Invalid method for URL (" + r.Method + " " + r.URL.Path + ")"})
	default:
		c.serve(rt)
	}
}

func (h handler) healthz(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		h.p.dialect.write(w, apiError{status: http.StatusMethodNotAllowed, message: "Invalid method for URL (" + r.Method + " " + r.URL.Path + ")"})
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok", "provider": h.p.name})
}

func (h handler) metricsz(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		h.p.dialect.write(w, apiError{status: http.StatusMethodNotAllowed, message: "Invalid method for URL (" + r.Method + " " + r.URL.Path + ")"})
		return
	}
	promhttp.HandlerFor(h.s.metrics.reg, promhttp.HandlerOpts{}).ServeHTTP(w, r)
}

// recover answers a request whose handler panicked (a bug) with the
// provider's 500, when nothing was written yet, and logs it.
// http.ErrAbortHandler, a deliberate abort (a truncated stream), passes.
func (h handler) recover(w *recorder, r *http.Request) {
	v := recover()
	if v == nil {
		return
	}
	if v == any(http.ErrAbortHandler) {
		panic(v)
	}
	h.s.log.Error("handler panicked", "provider", h.p.name, serve.KeyMethod, r.Method, serve.KeyPath, r.URL.Path,
		serve.KeyPanic, fmt.Sprint(v), serve.KeyStack, string(debug.Stack()))
	if w.code == 0 {
		h.p.dialect.write(w, statusError(h.p.dialect, http.StatusInternalServerError, 0))
	}
}

// recorder records the status of an answer. It unwraps for
// http.ResponseController (Flush).
type recorder struct {
	http.ResponseWriter
	code int // 0 until the answer begins
}

func (r *recorder) WriteHeader(code int) {
	if r.code == 0 {
		r.code = code
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *recorder) Write(b []byte) (int, error) {
	if r.code == 0 {
		r.code = http.StatusOK
	}
	return r.ResponseWriter.Write(b)
}

func (r *recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// status is the answer's status; 499 when none began (the client left
// during a delay).
func (r *recorder) status() int {
	if r.code == 0 {
		return 499
	}
	return r.code
}
