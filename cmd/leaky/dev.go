package main

import (
	"context"
	"fmt"
	"io"
	"os/exec"

	"golang.org/x/sync/errgroup"

	"github.com/leakytokens/leaky/authz"
	"github.com/leakytokens/leaky/internal/contract"
	"github.com/leakytokens/leaky/internal/serve"
	"github.com/leakytokens/leaky/ratelimit"
)

// runDev runs every service in one process on embedded defaults: the memory
// stores and the example policy, unless told otherwise.
func runDev(ctx context.Context, e env, args []string) error {
	rl := ratelimit.DefaultConfig()
	az := authz.DefaultConfig()
	fs := newFlagSet(e, "dev", "dev [flags]")
	fs.StringVar(&rl.ConfigPath, "config", "", "policy file, or a directory of it and envoyproxy/ratelimit domain files, shared by the services; empty = the embedded example policy")
	fs.StringVar(&rl.GRPCAddr, "ratelimit-grpc-addr", rl.GRPCAddr, "ratelimit gRPC listen address")
	fs.StringVar(&rl.HTTPAddr, "ratelimit-http-addr", rl.HTTPAddr, "ratelimit HTTP listen address")
	fs.StringVar(&rl.Store, "ratelimit-store", rl.Store, "ratelimit store: memory or redis")
	fs.StringVar(&rl.RedisURL, "redis-url", rl.RedisURL, "Redis URL when -ratelimit-store redis")
	fs.StringVar(&az.GRPCAddr, "authz-grpc-addr", az.GRPCAddr, "authz gRPC listen address")
	fs.StringVar(&az.HTTPAddr, "authz-http-addr", az.HTTPAddr, "authz HTTP listen address")
	fs.StringVar(&az.DatabaseURL, "database-url", "", "authz PostgreSQL URL; empty = the memory store")
	fs.StringVar(&az.SigningSecret, "signing-secret", "", "seals authz signing keys at rest (required with -database-url)")
	fs.StringVar(&az.AdminUsername, "admin-username", az.AdminUsername, "bootstrap admin's username")
	fs.StringVar(&az.AdminPassword, "admin-password", "", "bootstrap admin's password; empty = generated and printed once")
	bounds := serve.DefaultConfig() // the runtime's bounds, shared by both services
	bounds.RegisterFlags(fs)
	if err := parseFlags(e, fs, args); err != nil {
		return err
	}
	az.PolicyPath = rl.ConfigPath
	rl.Config, az.Config = bounds, bounds

	rls, err := newRatelimit(ctx, rl, e.logger.With(serve.KeyService, "ratelimit"))
	if err != nil {
		return fmt.Errorf("ratelimit: %w", err)
	}
	azs, err := newAuthz(ctx, az, e.logger.With(serve.KeyService, "authz"))
	if err != nil {
		rls.Close()
		return fmt.Errorf("authz: %w", err)
	}
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return rls.Run(gctx) })
	g.Go(func() error { return azs.Run(gctx) })
	printWalkthrough(e.stdout, walkthrough{
		rlGRPC: rls.GRPCAddr(), rlHTTP: rls.HTTPAddr(), rlStore: rl.Store, policy: rl.ConfigPath,
		azGRPC: azs.GRPCAddr(), azHTTP: azs.HTTPAddr(), admin: azs.Admin(),
	})
	return g.Wait()
}

type walkthrough struct {
	rlGRPC, rlHTTP, rlStore, policy string
	azGRPC, azHTTP                  string
	admin                           authz.AdminCredentials
}

func printWalkthrough(w io.Writer, c walkthrough) {
	policy := c.policy
	if policy == "" {
		policy = "the embedded example policy (internal/policy/example.yaml)"
	}
	fmt.Fprintf(w, `
Leaky Tokens is running (leaky dev). Ctrl-C stops it.

  authz      gRPC %s   HTTP http://%s   store memory
  ratelimit  gRPC %s   HTTP http://%s   store %s
  policy     %s
`, c.azGRPC, c.azHTTP, c.rlGRPC, c.rlHTTP, c.rlStore, policy)
	if c.admin.Password != "" {
		fmt.Fprintf(w, "  admin      %s / %s   (generated, shown once; set LEAKY_ADMIN_PASSWORD to choose it)\n", c.admin.Username, c.admin.Password)
	} else {
		fmt.Fprintf(w, "  admin      %s   (password from LEAKY_ADMIN_PASSWORD)\n", c.admin.Username)
	}
	a := "http://" + c.azHTTP
	fmt.Fprintf(w, `
1. Register and log in (authz REST API):
  curl -s -X POST %[1]s/api/v1/auth/register -H 'content-type: application/json' \
       -d '{"username":"alice","email":"alice@example.com","password":"correct-horse-battery"}'
  TOKEN=$(curl -s -X POST %[1]s/api/v1/auth/login -H 'content-type: application/json' \
       -d '{"username":"alice","password":"correct-horse-battery"}' | sed -n 's/.*"token":"\([^"]*\)".*/\1/p')
  USER_ID=$(curl -s %[1]s/api/v1/auth/me -H "authorization: Bearer $TOKEN" | sed -n 's/.*"userId":"\([^"]*\)".*/\1/p')

2. Create an API key (shown once):
  API_KEY=$(curl -s -X POST %[1]s/api/v1/auth/api-keys -H "authorization: Bearer $TOKEN" \
       -H 'content-type: application/json' -d "{\"userId\":\"$USER_ID\",\"name\":\"laptop\"}" \
       | sed -n 's/.*"apiKey":"\([^"]*\)".*/\1/p')

3. A Check, as Envoy's ext_authz filter sends it (the answer carries x-leaky-user-id, x-leaky-tier,
   x-leaky-provider and x-leaky-estimate):
  bin/leaky authcheck -addr %[2]s -path /openai/v1/chat/completions -H "x-api-key: $API_KEY" \
       -body '{"model":"gpt-4o","messages":[{"role":"user","content":"hello"}],"max_tokens":100}'
  bin/leaky authcheck -addr %[2]s -path /gemini/v1/models/gemini-pro:generateContent -H "authorization: Bearer $TOKEN" \
       -body '{"contents":[{"parts":[{"text":"hello"}]}],"generationConfig":{"maxOutputTokens":200}}'

4. Ask the ratelimit service for 100 tokens of alice's free-tier OpenAI budget (capacity 4000, 40/s):
`, a, c.azGRPC)
	req := fmt.Sprintf(`{"domain":%q,"descriptors":[{"entries":[{"key":%q,"value":"openai"},{"key":%q,"value":"free"},{"key":%q,"value":"alice"}]}],"hits_addend":100}`,
		contract.Domain, contract.KeyProvider, contract.KeyTier, contract.KeyUser)
	if _, err := exec.LookPath("grpcurl"); err == nil {
		fmt.Fprintf(w, "  grpcurl -plaintext -d '%s' %s envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit\n", req, c.rlGRPC)
	}
	fmt.Fprintf(w, `  bin/leaky rlcheck -addr %[1]s -d provider=openai,tier=free,user=$USER_ID -hits 100
   The whole bucket twice: the second answer is OVER_LIMIT with Retry-After and a JSON body:
  bin/leaky rlcheck -addr %[1]s -d provider=openai,tier=free,user=bob -hits 4000
  bin/leaky rlcheck -addr %[1]s -d provider=openai,tier=free,user=bob -hits 4000
   All or nothing across user, organisation and provider buckets in one request:
  bin/leaky rlcheck -addr %[1]s -d provider=openai,tier=free,user=carol -d provider=openai,org=acme -d provider=openai -hits 500

5. Health and metrics:
  curl -s http://%[2]s/readyz; curl -s %[3]s/readyz
  curl -s http://%[2]s/metrics | grep ratelimit_service_rate_limit

`, c.rlGRPC, c.rlHTTP, a)
}
