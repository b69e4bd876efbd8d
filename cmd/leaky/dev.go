package main

import (
	"context"
	"fmt"
	"io"
	"os/exec"

	"golang.org/x/sync/errgroup"

	"github.com/leakytokens/leaky/ratelimit"
)

// runDev runs every service in one process on embedded defaults: the memory
// stores and the example policy, unless told otherwise.
func runDev(ctx context.Context, e env, args []string) error {
	rl := ratelimit.DefaultConfig()
	fs := newFlagSet(e, "dev", "dev [flags]")
	fs.StringVar(&rl.ConfigPath, "config", "", "policy file or rule directory shared by the services; empty = the embedded example policy")
	fs.StringVar(&rl.GRPCAddr, "ratelimit-grpc-addr", rl.GRPCAddr, "ratelimit gRPC listen address")
	fs.StringVar(&rl.HTTPAddr, "ratelimit-http-addr", rl.HTTPAddr, "ratelimit HTTP listen address")
	fs.StringVar(&rl.Store, "ratelimit-store", rl.Store, "ratelimit store: memory or redis")
	fs.StringVar(&rl.RedisURL, "redis-url", rl.RedisURL, "Redis URL when -ratelimit-store redis")
	if err := parseFlags(e, fs, args); err != nil {
		return err
	}
	rls, err := ratelimit.New(ctx, rl, e.logger.With("service", "ratelimit"))
	if err != nil {
		return fmt.Errorf("ratelimit: %w", err)
	}
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return rls.Run(gctx) })
	printWalkthrough(e.stdout, rls.GRPCAddr(), rls.HTTPAddr(), rl)
	return g.Wait()
}

func printWalkthrough(w io.Writer, rlGRPC, rlHTTP string, rl ratelimit.Config) {
	policy := rl.ConfigPath
	if policy == "" {
		policy = "embedded example policy (internal/policy/example.yaml)"
	}
	fmt.Fprintf(w, `
Leaky Tokens is running (leaky dev). Ctrl-C stops it.

  ratelimit  gRPC %s   HTTP http://%s   store %s, policy %s

Ask for 100 tokens of alice's free-tier OpenAI budget (capacity 4000, leaks 40/s):
`, rlGRPC, rlHTTP, rl.Store, policy)
	req := `{"domain":"leaky-tokens","descriptors":[{"entries":[{"key":"provider","value":"openai"},{"key":"tier","value":"free"},{"key":"user","value":"alice"}]}],"hits_addend":100}`
	if _, err := exec.LookPath("grpcurl"); err == nil {
		fmt.Fprintf(w, "  grpcurl -plaintext -d '%s' %s envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit\n", req, rlGRPC)
	}
	fmt.Fprintf(w, "  bin/leaky rlcheck -addr %s -d provider=openai,tier=free,user=alice -hits 100\n", rlGRPC)
	fmt.Fprintf(w, "Ask for the whole bucket twice: the second answer is OVER_LIMIT with Retry-After and a JSON body:\n")
	fmt.Fprintf(w, "  bin/leaky rlcheck -addr %s -d provider=openai,tier=free,user=bob -hits 4000\n", rlGRPC)
	fmt.Fprintf(w, "  bin/leaky rlcheck -addr %s -d provider=openai,tier=free,user=bob -hits 4000\n", rlGRPC)
	fmt.Fprintf(w, "All or nothing across user, organisation and provider buckets (one request, three descriptors):\n")
	fmt.Fprintf(w, "  bin/leaky rlcheck -addr %s -d provider=openai,tier=free,user=carol -d provider=openai,org=acme -d provider=openai -hits 500\n", rlGRPC)
	fmt.Fprintf(w, "Health and metrics:\n  curl -s http://%s/readyz\n  curl -s http://%s/metrics | grep ratelimit_service_rate_limit\n\n", rlHTTP, rlHTTP)
}
