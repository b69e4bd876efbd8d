// Command leaky runs the Leaky Tokens services: one at a time (`leaky
// ratelimit`, `leaky authz`) or all of them in one process on embedded
// defaults (`leaky dev`). Every flag also reads LEAKY_<FLAG_IN_UPPER_SNAKE>.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/redis/go-redis/v9"
)

// env is what a command gets from the process.
type env struct {
	getenv func(string) string
	stdout io.Writer
	stderr io.Writer
	logger *slog.Logger
}

type command struct {
	name    string
	summary string
	run     func(ctx context.Context, e env, args []string) error
}

func commands() []command {
	return []command{
		{"dev", "run every service in one process on embedded defaults", runDev},
		{"ratelimit", "run the rate-limit service (Envoy RateLimitService)", runRatelimit},
		{"controlplane", "run the xDS control plane (policy file or Consul → Envoy, the gateway, ratelimit, authz)", runControlplane},
		{"authz", "run the authorization service (Envoy ext_authz, OAuth2); `authz migrate` applies migrations", runAuthz},
		{"rlcheck", "send one ShouldRateLimit request and print the answer", runRLCheck},
		{"authcheck", "send one ext_authz Check request and print the answer", runAuthCheck},
		{"loadgen", "load-test a ShouldRateLimit or Check server", runLoadgen},
		{"providers-stub", "serve fake OpenAI, Gemini and Qwen APIs (development and tests)", runProvidersStub},
		{"gateway", "run the gateway stand-in (Envoy's part, from the control plane's xDS; dev and tests)", runGateway},
	}
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	logger := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: logLevel(os.Getenv("LEAKY_LOG_LEVEL"))}))
	// go-redis logs through a process-wide logger; send its lines to ours.
	redis.SetLogger(redisLogger{logger.With("component", "go-redis")})
	err := run(ctx, os.Args[1:], env{
		getenv: os.Getenv,
		stdout: os.Stdout,
		stderr: os.Stderr,
		logger: logger,
	})
	stop()
	switch {
	case errors.Is(err, flag.ErrHelp):
		os.Exit(0)
	case errors.Is(err, errUsage):
		os.Exit(2)
	case err != nil:
		fmt.Fprintln(os.Stderr, "leaky:", err)
		os.Exit(1)
	}
}

var errUsage = errors.New("usage")

func run(ctx context.Context, args []string, e env) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(e.stderr)
		if len(args) == 0 {
			return errUsage
		}
		return nil
	}
	for _, c := range commands() {
		if c.name == args[0] {
			return c.run(ctx, e, args[1:])
		}
	}
	fmt.Fprintf(e.stderr, "leaky: unknown command %q\n\n", args[0])
	usage(e.stderr)
	return errUsage
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: leaky <command> [flags]   (leaky <command> -h lists the flags)")
	fmt.Fprintln(w, "\ncommands:")
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-14s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(w, "\nEvery flag -foo-bar can also be set with the environment variable LEAKY_FOO_BAR.")
	fmt.Fprintln(w, "LEAKY_LOG_LEVEL sets the log level (debug, info, warn, error; default info).")
}

// redisLogger adapts slog to go-redis's logging interface.
type redisLogger struct{ l *slog.Logger }

func (r redisLogger) Printf(ctx context.Context, format string, v ...any) {
	r.l.WarnContext(ctx, fmt.Sprintf(format, v...))
}

func logLevel(s string) slog.Level {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return slog.LevelInfo
	}
	return l
}
