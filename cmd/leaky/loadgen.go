package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/leakytokens/leaky/internal/contract"
	"github.com/leakytokens/leaky/internal/loadgen"
	"github.com/leakytokens/leaky/internal/serve"
)

// loadTarget is a request generator: RateLimit or Authz.
type loadTarget interface {
	Do(ctx context.Context, i int) error
	Answers() map[string]int64
}

type loadgenFlags struct {
	addr, target, label string
	serveFloor          string
	run                 loadgen.Options
	warmup, timeout     time.Duration
	serverPID           int
	json                bool
	rl                  loadgen.RateLimitOptions
	authz               loadgen.AuthzOptions
	http                loadgen.HTTPOptions // -target http: -url, -header, -body
	authzHTTP           string              // base URL of the authz REST API; empty: use -token or -api-key
	credential          loadgen.Credential
	// login is the wrong-password login load beside the Check run
	// (-login-load workers); its Base and Username come from the enrolment.
	login loadgen.LoginLoad
}

func (f *loadgenFlags) register(e env) *flag.FlagSet {
	fs := newFlagSet(e, "loadgen", "loadgen -addr HOST:PORT [-target ratelimit|authz] [-mode closed|open] [flags]")
	fs.StringVar(&f.addr, "addr", "127.0.0.1:9092", "gRPC address of the server under test (one connection)")
	fs.StringVar(&f.target, "target", "ratelimit", "what to load: ratelimit (ShouldRateLimit), authz (ext_authz Check) or http (-url: a completion through the gateway, or straight to a provider)")
	fs.StringVar((*string)(&f.run.Mode), "mode", string(loadgen.Closed), "closed: -concurrency workers back to back; open: -rate requests/s, latency from each request's intended send time")
	fs.IntVar(&f.run.Concurrency, "concurrency", 64, "workers (closed loop) or most outstanding requests (open loop)")
	fs.Float64Var(&f.run.Rate, "rate", 8000, "requests per second of the open loop")
	fs.DurationVar(&f.run.Duration, "duration", 10*time.Second, "length of the measured run (0: until -count or interrupted)")
	fs.Int64Var(&f.run.Count, "count", 0, "stop after this many requests (0: no bound)")
	fs.DurationVar(&f.warmup, "warmup", time.Second, "unmeasured run in the same mode before the measured one (0: none)")
	fs.DurationVar(&f.timeout, "timeout", time.Second, "deadline of each request; a miss counts as a DeadlineExceeded error (0: none)")
	fs.IntVar(&f.serverPID, "server-pid", 0, "PID of the server, to report its CPU per request from /proc (0: not measured)")
	fs.StringVar(&f.label, "label", "", "free text naming the setup in the report, e.g. the store")
	fs.BoolVar(&f.json, "json", false, "also print the report as one JSON line")
	fs.StringVar(&f.serveFloor, "serve-floor", "", "instead of load-testing, serve a do-nothing RateLimitService and ext_authz server (the floor of DESIGN §8) on this address until interrupted")

	d := loadgen.DefaultRateLimitOptions()
	f.rl = d
	fs.StringVar(&f.rl.Domain, "domain", d.Domain, "ratelimit: descriptor domain")
	fs.IntVar(&f.rl.Keys, "keys", d.Keys, "ratelimit: distinct users (and organisations)")
	fs.IntVar(&f.rl.Descriptors, "descriptors", d.Descriptors, "ratelimit: 1 (user) or 3 (user, org, provider) descriptors per request")
	fs.StringVar(&f.rl.Provider, "provider", d.Provider, "ratelimit: provider entry value")
	fs.StringVar(&f.rl.Tier, "tier", d.Tier, "ratelimit: tier entry value")
	fs.StringVar(&f.rl.KeyPrefix, "key-prefix", d.KeyPrefix, "ratelimit: user and organisation ids are this prefix plus a number")
	fs.Var((*uint32Flag)(&f.rl.Hits), "hits", "ratelimit: hits_addend (`tokens`) of every request")

	a := loadgen.DefaultAuthzOptions()
	f.authz = a
	fs.StringVar(&f.authz.Token, "token", "", "authz: bearer token (JWT) sent as Authorization")
	fs.StringVar(&f.authz.APIKey, "api-key", "", "authz: API key sent as X-Api-Key")
	fs.StringVar(&f.authzHTTP, "authz-http", "", "authz: base `URL` of the authz REST API (e.g. http://127.0.0.1:8081); before the run, register a throwaway user there and create an API key, then send the -credential (instead of -token or -api-key)")
	f.credential = loadgen.JWT
	fs.StringVar((*string)(&f.credential), "credential", string(loadgen.JWT), "authz: with -authz-http, the throwaway user's credential Check carries: jwt (its access token) or apikey (its API key)")
	fs.IntVar(&f.login.Workers, "login-load", 0, "authz: with -authz-http, this many clients send wrong-password logins for the throwaway user back to back during the warm-up and the measured run (0: none), to measure Check while password hashing runs")
	fs.IntVar(&f.login.PasswordBytes, "login-password-bytes", 256, "authz: length of the -login-load passwords (the service accepts up to 256)")
	fs.StringVar(&f.authz.Path, "path", a.Path, "authz: request path (its first segment names the provider)")
	fs.StringVar(&f.authz.Body, "body", a.Body, "authz, http: request body (Envoy forwards it to ext_authz; http sends it)")
	fs.StringVar(&f.http.URL, "url", "", "http: the `URL` every request goes to, e.g. http://127.0.0.1:8080/openai/v1/chat/completions")
	f.http.Header = http.Header{}
	fs.Var((*headerFlag)(&f.http.Header), "header", "http: a request header `name: value` (repeatable); with -authz-http the throwaway user's -credential is added")
	return fs
}

// runLoadgen load-tests a RateLimitService or ext_authz server over one
// gRPC connection and prints a report.
func runLoadgen(ctx context.Context, e env, args []string) error {
	var f loadgenFlags
	if err := parseFlags(e, f.register(e), args); err != nil {
		return err
	}
	if f.serveFloor != "" {
		return serveFloor(ctx, e, f.serveFloor)
	}
	if err := f.validate(); err != nil {
		return fmt.Errorf("loadgen: %w", err)
	}

	var conn *grpc.ClientConn
	if f.target != "http" {
		c, err := grpc.NewClient(f.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			return fmt.Errorf("loadgen: %w", err)
		}
		defer c.Close()
		if err := awaitReady(ctx, c, 5*time.Second); err != nil {
			return fmt.Errorf("loadgen: %s: %w", f.addr, err)
		}
		conn = c
	}

	if f.authzHTTP != "" {
		if err := f.enrol(ctx, e); err != nil {
			return err
		}
	}
	var logins *loadgen.LoginRun
	if f.login.Workers > 0 {
		logins = f.login.Start(ctx)
		defer logins.Stop()
	}
	if f.warmup > 0 {
		t, err := f.newTarget(conn)
		if err != nil {
			return err
		}
		w := f.run
		w.Duration, w.Count = f.warmup, 0
		loadgen.Run(ctx, w, f.do(t))
	}
	rep, err := f.measure(ctx, e, conn, logins)
	if err != nil {
		return err
	}
	if err := rep.WriteText(e.stdout); err != nil {
		return err
	}
	if f.json {
		b, err := rep.JSON()
		if err != nil {
			return err
		}
		if _, err := fmt.Fprintf(e.stdout, "%s\n", b); err != nil {
			return err
		}
	}
	return nil
}

// measure runs the measured run on a new target, reading the server's and
// its own CPU, and the answers of the login load (nil: none) during it.
func (f *loadgenFlags) measure(ctx context.Context, e env, conn *grpc.ClientConn, logins *loadgen.LoginRun) (loadgen.Report, error) {
	t, err := f.newTarget(conn)
	if err != nil {
		return loadgen.Report{}, err
	}
	server, client := loadgen.CPUMeter{PID: f.serverPID}, loadgen.CPUMeter{PID: os.Getpid()}
	server.Start()
	client.Start()
	var loginsBefore map[string]int64
	if logins != nil {
		loginsBefore = logins.Answers()
	}
	res := loadgen.Run(ctx, f.run, f.do(t))
	rep := loadgen.Report{Target: f.target, Label: f.label, Result: res, Answers: t.Answers()}
	if logins != nil {
		rep.LoginWorkers, rep.Logins = f.login.Workers, loadgen.Diff(logins.Answers(), loginsBefore)
	}
	serverCPU, err := server.Stop()
	if err != nil {
		return loadgen.Report{}, fmt.Errorf("loadgen: server cpu: %w", err)
	}
	clientCPU, err := client.Stop()
	if err != nil {
		return loadgen.Report{}, fmt.Errorf("loadgen: own cpu: %w", err)
	}
	if ctx.Err() != nil {
		fmt.Fprintln(e.stderr, "loadgen: interrupted; the report covers the requests completed so far")
	}

	rep.ServerCPU, rep.ClientCPU = serverCPU, clientCPU
	return rep, nil
}

func (f *loadgenFlags) validate() error {
	errs := []error{f.run.Validate()}
	switch f.target {
	case "ratelimit":
		errs = append(errs, f.rl.Validate())
	case "authz":
		errs = append(errs, f.authz.Validate(), f.validateEnrol())
	case "http":
		errs = append(errs, f.http.Validate())
		if f.authzHTTP != "" {
			errs = append(errs, f.validateEnrol())
		}
	default:
		errs = append(errs, fmt.Errorf("target %q: must be ratelimit, authz or http", f.target))
	}
	if f.authzHTTP != "" && f.target == "ratelimit" {
		errs = append(errs, errors.New("authz-http: only with -target authz or http"))
	}
	if f.login.Workers < 0 {
		errs = append(errs, errors.New("login-load: must not be negative"))
	}
	if f.login.Workers > 0 && (f.authzHTTP == "" || f.target != "authz") {
		errs = append(errs, errors.New("login-load: only with -target authz and -authz-http"))
	}
	if f.login.PasswordBytes < 1 {
		errs = append(errs, errors.New("login-password-bytes: must be positive"))
	}
	if f.warmup < 0 || f.timeout < 0 {
		errs = append(errs, errors.New("warmup, timeout: must not be negative"))
	}
	if f.serverPID < 0 {
		errs = append(errs, errors.New("server-pid: must not be negative"))
	}
	return errors.Join(errs...)
}

// validateEnrol checks the authz credential flags: -authz-http with a
// -credential, or -token or -api-key.
func (f *loadgenFlags) validateEnrol() error {
	if f.authzHTTP == "" {
		if f.authz.Token == "" && f.authz.APIKey == "" {
			return errors.New("authz: needs -authz-http, -token or -api-key")
		}
		return nil
	}
	var errs []error
	// No user info: the URL goes into errors and the log.
	if u, err := url.Parse(f.authzHTTP); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil {
		errs = append(errs, errors.New("authz-http: want http://host:port, without user info"))
	}
	if f.credential != loadgen.JWT && f.credential != loadgen.APIKey {
		errs = append(errs, fmt.Errorf("credential %q: must be %s or %s", f.credential, loadgen.JWT, loadgen.APIKey))
	}
	if f.authz.Token != "" || f.authz.APIKey != "" {
		errs = append(errs, errors.New("authz-http: not with -token or -api-key"))
	}
	return errors.Join(errs...)
}

// enrol registers a throwaway user on -authz-http and sets its -credential
// in f.authz. The credential is never printed.
func (f *loadgenFlags) enrol(ctx context.Context, e env) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	en, err := loadgen.Enrol(ctx, &http.Client{}, f.authzHTTP)
	if err != nil {
		return fmt.Errorf("loadgen: %w", err)
	}
	if f.authz, err = en.Use(f.authz, f.credential); err != nil {
		return fmt.Errorf("loadgen: %w", err)
	}
	if f.authz.Token != "" {
		f.http.Header.Set("authorization", "Bearer "+f.authz.Token)
	}
	if f.authz.APIKey != "" {
		f.http.Header.Set(contract.HeaderAPIKey, f.authz.APIKey)
	}
	f.login.Base, f.login.Username = f.authzHTTP, en.Username
	e.logger.Info("throwaway user registered", "command", "loadgen", "authz_http", f.authzHTTP, serve.KeyUsername, en.Username,
		serve.KeyUserID, en.UserID, "credential", string(f.credential))
	return nil
}

func (f *loadgenFlags) newTarget(conn *grpc.ClientConn) (loadTarget, error) {
	var (
		t   loadTarget
		err error
	)
	switch f.target {
	case "http":
		f.http.Body = f.authz.Body
		t, err = loadgen.NewHTTP(&http.Client{Transport: &http.Transport{
			MaxIdleConns: f.run.Concurrency, MaxIdleConnsPerHost: f.run.Concurrency, DisableCompression: true,
		}}, f.http)
	case "authz":
		t, err = loadgen.NewAuthz(conn, f.authz)
	default:
		t, err = loadgen.NewRateLimit(conn, f.rl)
	}
	if err != nil {
		return nil, fmt.Errorf("loadgen: %w", err)
	}
	return t, nil
}

// do wraps the target's Do with the per-request deadline.
func (f *loadgenFlags) do(t loadTarget) func(context.Context, int) error {
	if f.timeout == 0 {
		return t.Do
	}
	return func(ctx context.Context, i int) error {
		ctx, cancel := context.WithTimeout(ctx, f.timeout)
		defer cancel()
		return t.Do(ctx, i)
	}
}

// serveFloor runs the do-nothing RateLimitService on addr until ctx ends.
func serveFloor(ctx context.Context, e env, addr string) error {
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("loadgen: %w", err)
	}
	e.logger.Info("floor RateLimitService listening", serve.KeyGRPCAddr, lis.Addr().String())
	return loadgen.ServeFloor(ctx, lis)
}

// awaitReady connects conn and waits until it is ready, up to timeout, so
// that connection set-up is not measured.
func awaitReady(ctx context.Context, conn *grpc.ClientConn, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	conn.Connect()
	for {
		s := conn.GetState()
		if s == connectivity.Ready {
			return nil
		}
		if !conn.WaitForStateChange(ctx, s) {
			return fmt.Errorf("not ready after %v (state %v)", timeout, s)
		}
	}
}

// headerFlag collects repeated "name: value" headers.
type headerFlag http.Header

func (h *headerFlag) String() string { return "" }

func (h *headerFlag) Set(v string) error {
	name, value, ok := strings.Cut(v, ":")
	name = strings.TrimSpace(name)
	if !ok || name == "" {
		return fmt.Errorf("%q: want name: value", v)
	}
	http.Header(*h).Add(name, strings.TrimSpace(value))
	return nil
}
