package main

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	ratelimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/leakytokens/leaky/internal/contract"
)

// e2eUser is a registered user with a JWT and an API key.
type e2eUser struct {
	name, id, token, apiKey string
}

// newUser registers name through the gateway (authz's REST API) and
// creates an API key for it.
func (s *stack) newUser(name string) e2eUser {
	s.t.Helper()
	var reg struct {
		UserID string `json:"userId"`
		Token  string `json:"token"`
	}
	s.decode(http.StatusCreated, http.MethodPost, s.gateway+"/api/v1/auth/register", nil,
		jsonBody(s.t, map[string]string{"username": name, "email": name + "@example.com", "password": "correct-horse-battery"}), &reg)
	u := e2eUser{name: name, id: reg.UserID, token: reg.Token}
	var key struct {
		APIKey string `json:"apiKey"`
	}
	s.decode(http.StatusCreated, http.MethodPost, s.gateway+"/api/v1/auth/api-keys", u.bearer(),
		jsonBody(s.t, map[string]string{"userId": u.id, "name": "e2e"}), &key)
	if u.id == "" || u.token == "" || key.APIKey == "" {
		s.t.Fatalf("register %s: user %q, token set %v, api key set %v", name, u.id, u.token != "", key.APIKey != "")
	}
	u.apiKey = key.APIKey
	return u
}

func (u e2eUser) bearer() map[string]string {
	return map[string]string{"Authorization": "Bearer " + u.token}
}

// createOrg creates the organisation id with u as its member.
func (s *stack) createOrg(u e2eUser, id string) {
	s.t.Helper()
	s.decode(http.StatusCreated, http.MethodPost, s.gateway+"/api/v1/auth/orgs", u.bearer(),
		jsonBody(s.t, map[string]string{"id": id}), nil)
}

// complete sends an OpenAI chat completion through the gateway with the
// given headers (the credential among them).
func (s *stack) complete(header map[string]string, maxTokens int) answer {
	s.t.Helper()
	return s.do(http.MethodPost, s.gateway+"/openai/v1/chat/completions", header, completion(maxTokens))
}

// withKey is the header of a call with u's API key plus extra.
func withKey(u e2eUser, extra map[string]string) map[string]string {
	h := map[string]string{contract.HeaderAPIKey: u.apiKey}
	for k, v := range extra {
		h[k] = v
	}
	return h
}

// limitOf is the first number of the answer's x-ratelimit-limit: the limit
// of the bucket with the least remaining ("" without the header).
func limitOf(a answer) string {
	first, _, _ := strings.Cut(a.header.Get("X-Ratelimit-Limit"), ",")
	return strings.TrimSpace(first)
}

// remaining is what the bucket of one descriptor of the leaky-tokens
// domain has left.
func (s *stack) remaining(kv ...string) uint32 {
	s.t.Helper()
	return s.bucket(kv...).GetLimitRemaining()
}

// remainingOf is what each named bucket has left.
func (s *stack) remainingOf(buckets map[string][]string) map[string]uint32 {
	s.t.Helper()
	out := make(map[string]uint32, len(buckets))
	for name, b := range buckets {
		out[name] = s.remaining(b...)
	}
	return out
}

// bucket is the ratelimit service's status of the bucket of one
// descriptor of the leaky-tokens domain, asked with a hits_addend of 0 (a
// check that charges nothing). A descriptor that is no bucket of the
// policy fails the test.
func (s *stack) bucket(kv ...string) *rlsv3.RateLimitResponse_DescriptorStatus {
	s.t.Helper()
	d := &ratelimitv3.RateLimitDescriptor{HitsAddend: wrapperspb.UInt64(0)}
	for i := 0; i+1 < len(kv); i += 2 {
		d.Entries = append(d.Entries, &ratelimitv3.RateLimitDescriptor_Entry{Key: kv[i], Value: kv[i+1]})
	}
	conn, err := grpc.NewClient(s.d.rl.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		s.t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), pollBound)
	defer cancel()
	resp, err := rlsv3.NewRateLimitServiceClient(conn).ShouldRateLimit(ctx,
		&rlsv3.RateLimitRequest{Domain: contract.Domain, Descriptors: []*ratelimitv3.RateLimitDescriptor{d}})
	if err != nil {
		s.t.Fatalf("ShouldRateLimit %v: %v", kv, err)
	}
	st := resp.GetStatuses()
	if len(st) != 1 || st[0].GetCurrentLimit() == nil {
		s.t.Fatalf("ShouldRateLimit %v: want the status of one bucket, got %v", kv, resp)
	}
	return st[0]
}

// The buckets of the leaky-tokens domain, as descriptors.
func userBucket(provider, tier, user string) []string {
	return []string{contract.KeyProvider, provider, contract.KeyTier, tier, contract.KeyUser, user}
}

func orgPool(provider, org string) []string {
	return []string{contract.KeyProvider, provider, contract.KeyOrg, org}
}

func providerPool(provider string) []string { return []string{contract.KeyProvider, provider} }

// metric is the sum of the series of name, at the Prometheus endpoint
// url, whose labels include every one of labels ("k" → "v").
func (s *stack) metric(url, name string, labels map[string]string) float64 {
	s.t.Helper()
	resp, err := s.client.Get(url)
	if err != nil {
		s.t.Fatal(err)
	}
	defer resp.Body.Close()
	var sum float64
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		rest, ok := strings.CutPrefix(line, name)
		if !ok || !(strings.HasPrefix(rest, "{") || strings.HasPrefix(rest, " ")) {
			continue
		}
		matched := true
		for k, v := range labels {
			matched = matched && strings.Contains(rest, fmt.Sprintf("%s=%q", k, v))
		}
		if !matched {
			continue
		}
		fields := strings.Fields(rest[strings.LastIndexByte(rest, '}')+1:])
		if len(fields) == 0 {
			s.t.Fatalf("%s: no value in %q", url, line)
		}
		v, err := strconv.ParseFloat(fields[0], 64)
		if err != nil {
			s.t.Fatalf("%s: %q: %v", url, line, err)
		}
		sum += v
	}
	if err := sc.Err(); err != nil {
		s.t.Fatal(err)
	}
	return sum
}

// stubMetrics and gatewayMetrics are the Prometheus endpoints of the
// OpenAI stub and of the gateway.
func (s *stack) stubMetrics() string    { return "http://" + s.d.stub.Addrs()["openai"] + "/metrics" }
func (s *stack) gatewayMetrics() string { return "http://" + s.d.gwAdmin + "/metrics" }

// stubRequests is how many requests the OpenAI stub answered with status
// ("" for any).
func (s *stack) stubRequests(status string) float64 {
	labels := map[string]string{"provider": "openai"}
	if status != "" {
		labels["status"] = status
	}
	return s.metric(s.stubMetrics(), "leaky_stub_requests_total", labels)
}

// adminToken logs the bootstrap admin in through the gateway.
func (s *stack) adminToken() string {
	s.t.Helper()
	var login struct {
		Token string `json:"token"`
	}
	s.decode(http.StatusOK, http.MethodPost, s.gateway+"/api/v1/auth/login", nil,
		jsonBody(s.t, map[string]string{"username": s.f.az.AdminUsername, "password": e2eAdminPassword}), &login)
	return login.Token
}

// cpSnapshot is the control plane's GET /api/v1/admin/snapshot.
type cpSnapshot struct {
	Version string `json:"version"`
	Nodes   []struct {
		ID        string `json:"id"`
		Cluster   string `json:"cluster"`
		Connected bool   `json:"connected"`
		Types     map[string]struct {
			ACKed string `json:"acked"`
		} `json:"types"`
	} `json:"nodes"`
	Degraded []string `json:"degraded"`
}

func (s *stack) snapshot(adminToken string) cpSnapshot {
	s.t.Helper()
	var snap cpSnapshot
	s.decode(http.StatusOK, http.MethodGet, "http://"+s.d.cp.HTTPAddr()+"/api/v1/admin/snapshot",
		map[string]string{"Authorization": "Bearer " + adminToken}, "", &snap)
	return snap
}

// acked reports whether the node of cluster (ratelimit, authz,
// leaky-gateway…) is connected and has acknowledged version of typeURL,
// with an account of its state when not.
func (snap cpSnapshot) acked(cluster, typeURL, version string) (bool, string) {
	for _, n := range snap.Nodes {
		if n.Cluster == cluster && n.Connected && n.Types[typeURL].ACKed == version {
			return true, ""
		}
	}
	return false, fmt.Sprintf("no connected %s node has ACKed %s version %s: %+v", cluster, typeURL, version, snap.Nodes)
}

// waitLimit calls through the gateway until an answer's x-ratelimit-limit
// is want and returns how long that took from since. Each call asks for
// one token of output: the polls charge little.
func (s *stack) waitLimit(u e2eUser, want string, since time.Time) time.Duration {
	s.t.Helper()
	var took time.Duration
	s.waitFor("x-ratelimit-limit "+want, func() (bool, string) {
		a := s.complete(withKey(u, nil), 1)
		took = time.Since(since)
		return limitOf(a) == want, a.String()
	})
	return took
}
