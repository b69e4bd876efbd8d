package main

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/leakytokens/leaky/internal/contract"
	"github.com/leakytokens/leaky/internal/kafkadev"
	"github.com/leakytokens/leaky/internal/testenv"
	providersstub "github.com/leakytokens/leaky/providers-stub"
)

// `leaky ratelimit` on PostgreSQL and Kafka (DATABASE_URL, KAFKA_BROKERS),
// on the memory store and on Redis: a REST consume and a purchase are
// written to the ledger and published to the topic, and a second process
// on the same database, its store empty (a new memory store; the test's
// Redis keys deleted), rebuilds the user's quota from the ledger: the
// window's usage and the purchased balance.
func TestRatelimitRecordsOnPostgresAndKafka(t *testing.T) {
	for _, kind := range []string{"memory", "redis"} {
		t.Run(kind, func(t *testing.T) { testRecordsOnPostgresAndKafka(t, kind) })
	}
}

func testRecordsOnPostgresAndKafka(t *testing.T, kind string) {
	dsn := testenv.PostgresURL(t)
	broker, err := kafkadev.Start(context.WithoutCancel(t.Context()), "127.0.0.1:0", "token-usage")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(broker.Close)
	stub := startStubs(t)
	vars := map[string]string{
		"DATABASE_URL": dsn, "KAFKA_BROKERS": broker.Addr(),
		"LEAKY_TRUSTED_PROXIES": "127.0.0.1/32", "LEAKY_PROVIDER_URLS": "openai=http://" + stub["openai"],
	}
	var emptyStore func()
	if kind == "redis" {
		url, prefix := testenv.RedisURL(t), testenv.Prefix(t)
		vars["LEAKY_STORE"], vars["LEAKY_REDIS_URL"], vars["LEAKY_REDIS_PREFIX"] = "redis", url, prefix
		// Not a test of deadlines: a busy machine (a cold build beside the
		// tests, the race detector) misses the production 15 ms.
		vars["LEAKY_REDIS_TIMEOUT"] = "5s"
		emptyStore = func() { deleteRedisKeys(t, url, prefix) }
	}
	user := uuid.NewString()
	who := map[string]string{contract.HeaderUserID: user, contract.HeaderTier: "free", contract.HeaderRoles: "USER"}

	base, stop := startRatelimitRun(t, vars)
	a := call(t, "POST", base+"/api/v1/tokens/consume", who, `{"userId":"`+user+`","provider":"openai","tokens":100,"prompt":"Say hello"}`)
	if a.status != http.StatusOK {
		t.Fatalf("consume: %d %s", a.status, a.body)
	}
	var consumed struct {
		ProviderResponse struct {
			Usage struct {
				TotalTokens int64 `json:"total_tokens"`
			} `json:"usage"`
		} `json:"providerResponse"`
		Quota struct{ RemainingTokens int64 } `json:"quota"`
	}
	if err := json.Unmarshal([]byte(a.body), &consumed); err != nil || consumed.ProviderResponse.Usage.TotalTokens == 0 {
		t.Fatalf("consume answer %s: %v, want the provider's usage", a.body, err)
	}
	if a := call(t, "POST", base+"/api/v1/tokens/purchase", who, `{"userId":"`+user+`","provider":"openai","tokens":5000}`); a.status != http.StatusAccepted || !strings.Contains(a.body, `"COMPLETED"`) {
		t.Fatalf("purchase: %d %s", a.status, a.body)
	}
	want := quotaRemaining(t, base, who, user)
	if want != consumed.Quota.RemainingTokens+5000 {
		t.Fatalf("quota after the purchase = %d, want %d + 5000", want, consumed.Quota.RemainingTokens)
	}
	stop()
	if emptyStore != nil {
		emptyStore()
	}

	base, _ = startRatelimitRun(t, vars)
	if got := quotaRemaining(t, base, who, user); got != want {
		t.Errorf("a second process rebuilt the quota as %d remaining, want %d (from the ledger)", got, want)
	}

	types := map[string]int{}
	for _, r := range consumeTopic(t, broker.Addr(), "token-usage", 5) {
		var ev struct {
			Type, UserID, Kind string
			Actual             int64
		}
		if err := json.Unmarshal(r.Value, &ev); err != nil || string(r.Key) != user {
			t.Errorf("event %s (key %q): %v, want one keyed by the user", r.Value, r.Key, err)
			continue
		}
		types[ev.Type]++
		if ev.Type == "usage" && (ev.Kind != "consume" || ev.Actual != consumed.ProviderResponse.Usage.TotalTokens) {
			t.Errorf("usage event %s, want kind consume and actual %d", r.Value, consumed.ProviderResponse.Usage.TotalTokens)
		}
	}
	if types["usage"] != 1 || types["purchase"] != 4 {
		t.Errorf("events by type = %v, want one usage and the purchase's four steps", types)
	}
}

// startStubs runs the provider stubs in-process on free ports.
func startStubs(t *testing.T) map[string]string {
	t.Helper()
	cfg := providersstub.DefaultConfig()
	cfg.OpenAIAddr, cfg.GeminiAddr, cfg.QwenAddr = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"
	srv, err := providersstub.New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return srv.Addrs()
}

// startRatelimitRun runs `leaky ratelimit` in-process with vars as its
// environment and returns its HTTP base URL, read from its "serving" log
// line, and a function that stops it and waits.
func startRatelimitRun(t *testing.T, vars map[string]string) (string, func()) {
	t.Helper()
	var logs syncBuffer
	e := testEnv(io.Discard, io.Discard, vars)
	e.logger = slog.New(slog.NewJSONHandler(&logs, nil))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"ratelimit", "-grpc-addr", "127.0.0.1:0", "-http-addr", "127.0.0.1:0"}, e)
	}()
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			t.Errorf("leaky ratelimit: %v", err)
		}
	}
	t.Cleanup(stop)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("leaky ratelimit's log:\n%s", logs.String())
		}
	})
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		for _, line := range strings.Split(logs.String(), "\n") {
			var l struct {
				Msg      string `json:"msg"`
				HTTPAddr string `json:"http_addr"`
			}
			if json.Unmarshal([]byte(line), &l) == nil && l.Msg == "serving" && l.HTTPAddr != "" {
				return "http://" + l.HTTPAddr, stop
			}
		}
		select {
		case err := <-done:
			t.Fatalf("leaky ratelimit ended: %v\n%s", err, logs.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("leaky ratelimit did not serve within 60s:\n%s", logs.String())
		}
	}
}

type httpAnswer struct {
	status int
	body   string
}

func call(t *testing.T, method, url string, header map[string]string, body string) httpAnswer {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("content-type", "application/json")
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := (&http.Client{Timeout: time.Minute}).Do(req) // a stuck call fails the test, not the run
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return httpAnswer{resp.StatusCode, string(b)}
}

func quotaRemaining(t *testing.T, base string, who map[string]string, user string) int64 {
	t.Helper()
	a := call(t, "GET", base+"/api/v1/tokens/quota?userId="+user+"&provider=openai", who, "")
	var q struct{ RemainingTokens int64 }
	if a.status != http.StatusOK || json.Unmarshal([]byte(a.body), &q) != nil {
		t.Fatalf("quota: %d %s", a.status, a.body)
	}
	return q.RemainingTokens
}

// consumeTopic reads topic from the start until n distinct events (by
// their event-id header; delivery is at least once) arrived, within a
// minute, and returns one record of each.
func consumeTopic(t *testing.T, addr, topic string, n int) []*kgo.Record {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	var got []*kgo.Record
	seen := map[string]bool{}
	for len(got) < n {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("read %d events of %s within a minute, want %d", len(got), topic, n)
		}
		fs.EachRecord(func(r *kgo.Record) {
			for _, h := range r.Headers {
				if h.Key == "event-id" && !seen[string(h.Value)] {
					seen[string(h.Value)] = true
					got = append(got, r)
				}
			}
		})
	}
	return got
}

// deleteRedisKeys deletes every key under prefix (this test's own), as a
// Redis restarted without persistence would have lost them.
func deleteRedisKeys(t *testing.T, url, prefix string) {
	t.Helper()
	opt, err := redis.ParseURL(url)
	if err != nil {
		t.Fatal(err)
	}
	c := redis.NewClient(opt)
	defer c.Close()
	ctx := context.Background()
	n := 0
	for it := c.Scan(ctx, 0, prefix+"*", 1000).Iterator(); it.Next(ctx); n++ {
		if err := c.Del(ctx, it.Val()).Err(); err != nil {
			t.Fatal(err)
		}
	}
	if n == 0 {
		t.Fatalf("no key under %q to delete: the first process did not use Redis", prefix)
	}
}
