package main

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"

	"github.com/leakytokens/leaky/authz"
)

// walkthrough is what `leaky dev` prints: where everything listens and the
// curl commands a new user pastes.
type walkthrough struct {
	gateway, gatewayAddr, gatewayAdmin, bootstrap string
	rlGRPC, rlHTTP, rlStore                       string
	azGRPC, azHTTP                                string
	cpXDS, cpHTTP                                 string
	providers                                     map[string]string
	policy, policyNote                            string
	consulAddr, policyKey                         string // "" without Consul
	kafka                                         string // the brokers of topic token-usage
	kafkaEmbedded                                 bool
	admin                                         authz.AdminCredentials
}

func (d *dev) walkthrough() walkthrough {
	return walkthrough{
		gateway: d.gateway, gatewayAddr: d.gatewayAddr, gatewayAdmin: d.gwAdmin, bootstrap: d.bootstrap,
		rlGRPC: d.rl.GRPCAddr(), rlHTTP: d.rl.HTTPAddr(), rlStore: d.rlStore,
		azGRPC: d.az.GRPCAddr(), azHTTP: d.az.HTTPAddr(),
		cpXDS: d.cp.XDSAddr(), cpHTTP: d.cp.HTTPAddr(),
		providers: d.stub.Addrs(), policy: d.policyPath, policyNote: d.policyNote, admin: d.az.Admin(),
		consulAddr: d.consulAddr, policyKey: d.policyKey, kafka: d.kafka, kafkaEmbedded: d.kafkaEmbedded,
	}
}

// completion is the body of the walk-through's OpenAI calls.
func completion(maxTokens int) string {
	return fmt.Sprintf(`{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say hello"}],"max_tokens":%d}`, maxTokens)
}

func printWalkthrough(w io.Writer, c walkthrough) {
	var gw string
	switch c.gateway {
	case gatewayStandin:
		gw = fmt.Sprintf("http://%s   (the stand-in: no envoy on PATH)   admin http://%s", c.gatewayAddr, c.gatewayAdmin)
	case gatewayEnvoy:
		gw = fmt.Sprintf("http://%s   (envoy -c %s)   admin http://%s", c.gatewayAddr, c.bootstrap, c.gatewayAdmin)
	default:
		gw = fmt.Sprintf("none started (-gateway none): run Envoy on the control plane, e.g. envoy -c envoy/envoy.yaml, listening on %s", c.gatewayAddr)
	}
	var provs []string
	for _, name := range slices.Sorted(maps.Keys(c.providers)) {
		provs = append(provs, fmt.Sprintf("%s http://%s", name, c.providers[name]))
	}
	policyLine := c.policy + c.policyNote
	if c.consulAddr != "" {
		policyLine = fmt.Sprintf("Consul key %[1]s (seeded from %[2]s when absent; tier changes are written to the key;\n"+
			"                a key an earlier run changed keeps its limits: consul kv delete %[1]s starts over)\n"+
			"  consul        http://%[3]s   the control plane reads the policy key and every endpoint from the catalog,\n"+
			"                where ratelimit, authz, the providers and the control plane registered themselves",
			c.policyKey, c.policy, c.consulAddr)
	}
	fmt.Fprintf(w, `
Leaky Tokens is running (leaky dev). Ctrl-C stops it.

  gateway       %s
  authz         gRPC %s   HTTP http://%s   store memory
  ratelimit     gRPC %s   HTTP http://%s   store %s
  controlplane  xDS %s   admin API http://%s
  providers     %s
  policy        %s
  kafka         %s
`, gw, c.azGRPC, c.azHTTP, c.rlGRPC, c.rlHTTP, c.rlStore, c.cpXDS, c.cpHTTP, strings.Join(provs, "   "), policyLine, kafkaLine(c))
	// The login body: in double quotes when the password is the shell's
	// variable (single quotes would keep "$LEAKY_ADMIN_PASSWORD" as text).
	login := fmt.Sprintf(`"{\"username\":\"%s\",\"password\":\"$LEAKY_ADMIN_PASSWORD\"}"`, c.admin.Username)
	if c.admin.Password != "" {
		fmt.Fprintf(w, "  admin         %s / %s   (generated, shown once; set LEAKY_ADMIN_PASSWORD to choose it)\n", c.admin.Username, c.admin.Password)
		login = fmt.Sprintf(`'{"username":"%s","password":"%s"}'`, c.admin.Username, c.admin.Password)
	} else {
		fmt.Fprintf(w, "  admin         %s   (password from LEAKY_ADMIN_PASSWORD)\n", c.admin.Username)
	}
	printSteps(w, c, login)
}

// printSteps prints the walk-through proper. Every request goes through
// the gateway but the tier change, which is the control plane's own API.
func printSteps(w io.Writer, c walkthrough, adminLogin string) {
	openai := func(maxTokens int) string {
		return fmt.Sprintf(`$G/openai/v1/chat/completions -H "x-api-key: $API_KEY" -H 'content-type: application/json' \
       -d '%s'`, completion(maxTokens))
	}
	fmt.Fprintf(w, `
Every call below goes through the gateway: ext_authz (authz: who, which tier, how many tokens) →
rate limit (ratelimit: the user's, organisation's and provider's buckets, all or nothing) → provider.

1. Register and log in:
  G=http://%[1]s
  curl -s -X POST $G/api/v1/auth/register -H 'content-type: application/json' \
       -d '{"username":"alice","email":"alice@example.com","password":"correct-horse-battery"}'
  TOKEN=$(curl -s -X POST $G/api/v1/auth/login -H 'content-type: application/json' \
       -d '{"username":"alice","password":"correct-horse-battery"}' | sed -n 's/.*"token":"\([^"]*\)".*/\1/p')
  USER_ID=$(curl -s $G/api/v1/auth/me -H "authorization: Bearer $TOKEN" | sed -n 's/.*"userId":"\([^"]*\)".*/\1/p')

2. Create an API key (shown once):
  API_KEY=$(curl -s -X POST $G/api/v1/auth/api-keys -H "authorization: Bearer $TOKEN" \
       -H 'content-type: application/json' -d "{\"userId\":\"$USER_ID\",\"name\":\"laptop\"}" \
       | sed -n 's/.*"apiKey":"\([^"]*\)".*/\1/p')

3. A chat completion from the OpenAI stub with the API key; the answer carries the bucket's
   x-ratelimit-limit / -remaining / -reset (alice's free tier: 4000 OpenAI tokens, refilling 40/s):
  curl -s -i %[2]s

4. A Gemini completion with the JWT (the free tier's bucket for other providers: 2000 tokens):
  curl -s -i "$G/gemini/v1beta/models/gemini-1.5-flash:generateContent" -H "authorization: Bearer $TOKEN" \
       -H 'content-type: application/json' -d '{"contents":[{"parts":[{"text":"Say hello"}]}],"generationConfig":{"maxOutputTokens":50}}'

5. Spend the budget: three calls at once, each reserving its prompt and max_tokens (1500) while
   the provider takes 3 s to answer (x-stub-latency, a knob of the stub): two fit in alice's 4000,
   the third is refused: 429, Retry-After (exact: until the tokens have drained) and a JSON body
   naming the bucket. When the two answer, the metering settles each at its real usage and the
   rest of its reservation is refunded:
  for i in 1 2 3; do curl -s -w '\n' -D - -H 'x-stub-latency: 3s' %[3]s \
       | grep -iE '^HTTP|^retry-after|^x-ratelimit-remaining|^\{"error' & sleep 0.3; done; wait
`, c.gatewayAddr, openai(50), openai(1500))
	written := "policy file is rewritten"
	if c.consulAddr != "" {
		written = "Consul key " + c.policyKey + " is rewritten"
	}
	fmt.Fprintf(w, `
6. Change the tier as an admin (the control plane's API, checked against authz's published keys): the
   %[7]s, the control plane pushes it to ratelimit and authz, and the next call
   passes under the new limit:
  ADMIN_TOKEN=$(curl -s -X POST $G/api/v1/auth/login -H 'content-type: application/json' \
       -d %[1]s | sed -n 's/.*"token":"\([^"]*\)".*/\1/p')
  curl -s -X PUT http://%[2]s/api/v1/admin/tiers/free -H "authorization: Bearer $ADMIN_TOKEN" \
       -H 'content-type: application/json' \
       -d '{"priority":10,"roles":["USER"],"buckets":{"*":{"capacity":2000,"leak_rate":20},"openai":{"capacity":40000,"leak_rate":400}}}'
  curl -s -D - -o /dev/null %[3]s | grep -iE '^HTTP|^x-ratelimit'
  curl -s http://%[2]s/api/v1/admin/snapshot -H "authorization: Bearer $ADMIN_TOKEN"

7. The token API (the seed's, served by ratelimit, through the gateway): consume 100 Qwen tokens
   (reserved, the provider called, settled at the usage it reports), read the quota, buy 5000
   tokens twice with one Idempotency-Key (one purchase: the same saga), read the saga and the quota:
  curl -s $G/api/v1/tokens/status; echo
  curl -s -X POST $G/api/v1/tokens/consume -H "authorization: Bearer $TOKEN" -H 'content-type: application/json' \
       -d "{\"userId\":\"$USER_ID\",\"provider\":\"qwen\",\"tokens\":100,\"prompt\":\"Say hello\"}"; echo
  curl -s "$G/api/v1/tokens/quota?userId=$USER_ID&provider=qwen" -H "authorization: Bearer $TOKEN"; echo
  BUY="{\"userId\":\"$USER_ID\",\"provider\":\"qwen\",\"tokens\":5000}"
  SAGA_ID=$(curl -s -X POST $G/api/v1/tokens/purchase -H "authorization: Bearer $TOKEN" -H 'idempotency-key: buy-1' \
       -H 'content-type: application/json' -d "$BUY" | sed -n 's/.*"sagaId":"\([^"]*\)".*/\1/p')
  curl -s -X POST $G/api/v1/tokens/purchase -H "authorization: Bearer $TOKEN" -H 'idempotency-key: buy-1' \
       -H 'content-type: application/json' -d "$BUY"; echo
  curl -s $G/api/v1/tokens/purchase/$SAGA_ID -H "authorization: Bearer $TOKEN"; echo
  curl -s "$G/api/v1/tokens/quota?userId=$USER_ID&provider=qwen" -H "authorization: Bearer $TOKEN"; echo

8. A streamed completion through the gateway: the metering (ext_proc, in ratelimit) asks the provider
   for its usage chunk, keeps it from you (you did not ask for it) and settles the reservation at the
   real usage:
  curl -sN $G/openai/v1/chat/completions -H "x-api-key: $API_KEY" -H 'content-type: application/json' \
       -d '{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"Say hello"}],"max_tokens":50}'
  curl -s http://%[5]s/metrics | grep '^ratelimit_meter_settles_total'

9. The events on Kafka (topic token-usage: usage, reservation-settled, purchase; key, headers,
   JSON), read with kcat (make deps installs it), then health and metrics:
  kcat -b %[8]s -C -t token-usage -o beginning -e -q -f '%%k %%h %%s\n'
  curl -s http://%[4]s/ready; curl -s http://%[5]s/readyz; curl -s http://%[6]s/readyz; curl -s http://%[2]s/readyz
  curl -s http://%[5]s/metrics | grep ratelimit_service_rate_limit

With Envoy installed, run it on the same control plane instead of the stand-in:
  bin/leaky dev -gateway none      # then, in another terminal:
  envoy -c envoy/envoy.yaml        # node leaky-envoy, ADS at 127.0.0.1:18000, admin on 127.0.0.1:9901
(or put envoy on PATH: leaky dev then starts it with a bootstrap of its own).

`, adminLogin, c.cpHTTP, openai(1500), c.gatewayAdmin, c.rlHTTP, c.azHTTP, written, c.kafka)
}

// kafkaLine says where the usage events go.
func kafkaLine(c walkthrough) string {
	if c.kafkaEmbedded {
		return c.kafka + "   the embedded Kafka-protocol broker (kfake, in memory), topic token-usage"
	}
	return c.kafka + "   topic token-usage"
}
