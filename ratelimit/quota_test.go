package ratelimit

import (
	"context"
	"encoding/json"
	"errors"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"github.com/google/go-cmp/cmp"
	"github.com/redis/go-redis/v9"

	"github.com/leakytokens/leaky/internal/contract"
	"github.com/leakytokens/leaky/ratelimit/ledger"
	"github.com/leakytokens/leaky/ratelimit/store"
)

// quotaClock is the service's planning clock in the quota tests.
type quotaClock struct{ ns atomic.Int64 }

func (c *quotaClock) now() time.Time      { return time.Unix(0, c.ns.Load()) }
func (c *quotaClock) set(t time.Time)     { c.ns.Store(t.UnixNano()) }
func (c *quotaClock) add(d time.Duration) { c.ns.Add(int64(d)) }

// quotaRecord answers QuotaState from what the test says the record holds
// and records the pools asked for; the rest of the ledger is not used by
// the rate-limit path.
type quotaRecord struct {
	ledger.Ledger // nil: any other method panics, so a test using one fails
	mu            sync.Mutex
	used, bought  map[ledger.Pool]int64
	asked         []ledger.Pool
	windows       []time.Time
}

func (f *quotaRecord) QuotaState(_ context.Context, p ledger.Pool, window time.Time) (ledger.QuotaState, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.asked, f.windows = append(f.asked, p), append(f.windows, window)
	return ledger.QuotaState{Used: f.used[p], Purchased: f.bought[p]}, nil
}

// startQuota starts a service on the quota policy with the planning clock
// and ledger set before it runs.
func startQuota(t *testing.T, kind string, clock *quotaClock, record ledger.Ledger) *server {
	return startQuotaOn(t, kind, clock, record, func(st store.Store) store.Store { return st })
}

// startQuotaOn is startQuota on the store wrap returns around the one
// kind names.
func startQuotaOn(t *testing.T, kind string, clock *quotaClock, record ledger.Ledger, wrap func(store.Store) store.Store) *server {
	t.Helper()
	cfg := testConfig(t, kind, "quota.yaml")
	return startOn(t, cfg, wrap(testStore(t, cfg)), func(svc *Service) {
		svc.now = clock.now
		if record != nil {
			svc.SetLedger(record)
		}
	})
}

// consume asks for hits tokens as user u (org o, "" for none) of tier free
// on openai, with the descriptors Envoy builds.
func (s *server) consume(t *testing.T, u, o string, hits uint32) *rlsv3.RateLimitResponse {
	t.Helper()
	ds := envoyDescriptors(contract.Request{Provider: "openai", Tier: "free", User: u, Org: o, Estimate: int64(hits)})
	return s.ask(t, contract.Domain, hits, ds...)
}

// codes are the overall code and each descriptor's code.
func codesOf(resp *rlsv3.RateLimitResponse) []rlsv3.RateLimitResponse_Code {
	out := []rlsv3.RateLimitResponse_Code{resp.GetOverallCode()}
	for _, st := range resp.GetStatuses() {
		out = append(out, st.GetCode())
	}
	return out
}

const (
	okc  = rlsv3.RateLimitResponse_OK
	over = rlsv3.RateLimitResponse_OVER_LIMIT
)

func expectCodes(t *testing.T, what string, resp *rlsv3.RateLimitResponse, want ...rlsv3.RateLimitResponse_Code) {
	t.Helper()
	if diff := cmp.Diff(want, codesOf(resp)); diff != "" {
		t.Errorf("%s: codes (overall, per descriptor) (-want +got):\n%s", what, diff)
	}
}

func quotaBody(t *testing.T, resp *rlsv3.RateLimitResponse) overLimitBody {
	t.Helper()
	var b overLimitBody
	if err := json.Unmarshal(resp.GetRawBody(), &b); err != nil {
		t.Fatalf("body %q: %v", resp.GetRawBody(), err)
	}
	return b
}

// Berlin's 2026-10-25 is 25 hours long: [2026-10-24T22:00Z, 2026-10-25T23:00Z).
var (
	fallBackNoon = time.Date(2026, 10, 25, 12, 0, 0, 0, time.UTC)
	fallBackEnd  = time.Date(2026, 10, 25, 23, 0, 0, 0, time.UTC)
)

func forStores(t *testing.T, run func(t *testing.T, kind string)) {
	for _, kind := range []string{"memory", "redis"} {
		t.Run(kind, func(t *testing.T) { run(t, kind) })
	}
}

// A refusal by a quota charges nothing, in any bucket or quota, answers
// scope quota with Retry-After to the window's end, and the org quota
// binds while the user's is free, and the reverse.
func TestQuotaRefusals(t *testing.T) {
	forStores(t, func(t *testing.T, kind string) {
		clock := &quotaClock{}
		clock.set(fallBackNoon)
		s := startQuota(t, kind, clock, nil)
		expectCodes(t, "ann 60", s.consume(t, "ann", "acme", 60), okc, okc, okc, okc)
		resp := s.consume(t, "ann", "acme", 60) // user quota 100 refuses; org 150 would admit
		expectCodes(t, "ann 60 more", resp, over, over, okc, okc)
		b := quotaBody(t, resp)
		wantRetry := int64(fallBackEnd.Sub(fallBackNoon) / time.Second)
		if diff := cmp.Diff(overLimitBody{Error: "quota_exhausted", Scope: "quota", Limit: 100, Remaining: 40, RetryAfterSeconds: wantRetry}, b); diff != "" {
			t.Errorf("body (-want +got):\n%s", diff)
		}
		if got := header(resp, "retry-after"); got != strconv.FormatInt(wantRetry, 10) {
			t.Errorf("Retry-After = %q, want %d (to the end of the 25-hour day)", got, wantRetry)
		}
		if st := resp.GetStatuses()[0]; st.GetCurrentLimit().GetName() != "quota" || st.GetLimitRemaining() != 40 {
			t.Errorf("user status = %v, want the quota with 40 remaining", st)
		}
		// Nothing was charged: the org quota still holds 90, the buckets
		// their earlier remaining.
		if st := resp.GetStatuses()[2]; st.GetLimitRemaining() != 1000000-60 {
			t.Errorf("provider status remaining = %d, want untouched %d", st.GetLimitRemaining(), 1000000-60)
		}
		expectCodes(t, "bob 90 (org to its allowance)", s.consume(t, "bob", "acme", 90), okc, okc, okc, okc)
		// The org binds while the user's quota is free.
		resp = s.consume(t, "cyd", "acme", 1)
		expectCodes(t, "cyd 1, org spent", resp, over, okc, over, okc)
		if b := quotaBody(t, resp); b.Scope != "quota" || b.Limit != 150 || b.Remaining != 0 {
			t.Errorf("org refusal body = %+v, want the org quota's", b)
		}
		// The user binds while the (other) org is free.
		expectCodes(t, "ann 41 in globex", s.consume(t, "ann", "globex", 41), over, over, okc, okc)
		expectCodes(t, "ann 40 in globex", s.consume(t, "ann", "globex", 40), okc, okc, okc, okc)
		expectCodes(t, "ann 1 alone", s.consume(t, "ann", "", 1), over, over, okc)
		// More than the allowance can never be admitted.
		resp = s.consume(t, "dee", "", 101)
		if b := quotaBody(t, resp); b.RetryAfterSeconds != -1 || header(resp, "retry-after") != "" {
			t.Errorf("101 of 100: body %+v, Retry-After %q, want never", b, header(resp, "retry-after"))
		}
	})
}

// The window turns exactly at local midnight: a microsecond before, the
// spent quota refuses; at midnight it admits its allowance again.
func TestQuotaBoundary(t *testing.T) {
	forStores(t, func(t *testing.T, kind string) {
		clock := &quotaClock{}
		clock.set(fallBackEnd.Add(-time.Hour))
		s := startQuota(t, kind, clock, nil)
		expectCodes(t, "100", s.consume(t, "ann", "", 100), okc, okc, okc)
		clock.set(fallBackEnd.Add(-time.Microsecond))
		resp := s.consume(t, "ann", "", 1)
		expectCodes(t, "1 a µs before midnight", resp, over, over, okc)
		if got := header(resp, "retry-after"); got != "1" {
			t.Errorf("Retry-After a µs before midnight = %q, want 1", got)
		}
		clock.set(fallBackEnd)
		expectCodes(t, "100 at midnight", s.consume(t, "ann", "", 100), okc, okc, okc)
		expectCodes(t, "1 more", s.consume(t, "ann", "", 1), over, over, okc)
		// The next day is 24 hours: the window after turns 24 h later.
		clock.add(24*time.Hour - time.Microsecond)
		expectCodes(t, "1 at the end of the next day", s.consume(t, "ann", "", 1), over, over, okc)
		clock.add(time.Microsecond)
		expectCodes(t, "1 the day after", s.consume(t, "ann", "", 1), okc, okc, okc)
	})
}

// Redis loses the quota keys mid-run: the next decision rebuilds the pools
// from the ledger's QuotaState and admits nothing beyond it.
func TestQuotaRebuiltFromLedger(t *testing.T) {
	clock := &quotaClock{}
	clock.set(fallBackNoon)
	rec := &quotaRecord{used: map[ledger.Pool]int64{}, bought: map[ledger.Pool]int64{}}
	s := startQuota(t, "redis", clock, rec)
	userPool := ledger.Pool{Scope: "user", Subject: "ann", Provider: "openai"}
	orgPool := ledger.Pool{Scope: "org", Subject: "acme", Provider: "openai"}
	expectCodes(t, "70", s.consume(t, "ann", "acme", 70), okc, okc, okc, okc)
	rec.mu.Lock()
	asked := len(rec.asked)
	// What the ledger recorded of that usage, and a purchase of 5.
	rec.used[userPool], rec.used[orgPool], rec.bought[userPool] = 70, 70, 5
	rec.mu.Unlock()
	if asked != 2 {
		t.Errorf("first decision read %d pools from the ledger, want 2 (both new)", asked)
	}

	flushPrefix(t, s.svc.cfg.RedisURL, s.svc.cfg.RedisPrefix)
	expectCodes(t, "36 after the flush", s.consume(t, "ann", "acme", 36), over, over, okc, okc)
	expectCodes(t, "35 after the flush", s.consume(t, "ann", "acme", 35), okc, okc, okc, okc)
	expectCodes(t, "1 more", s.consume(t, "ann", "acme", 1), over, over, okc, okc)
	rec.mu.Lock()
	defer rec.mu.Unlock()
	want := []ledger.Pool{userPool, orgPool, userPool, orgPool}
	if diff := cmp.Diff(want, rec.asked); diff != "" {
		t.Errorf("pools read from the ledger (-want +got):\n%s", diff)
	}
	dayStart := time.Date(2026, 10, 24, 22, 0, 0, 0, time.UTC)
	for _, w := range rec.windows {
		if !w.Equal(dayStart) {
			t.Errorf("QuotaState window %s, want the Berlin day's start %s", w, dayStart)
		}
	}
}

// flushPrefix deletes the keys under prefix, as a Redis restart without
// persistence would lose them (other tests' keys are left alone).
func flushPrefix(t *testing.T, url, prefix string) {
	t.Helper()
	o, err := redis.ParseURL(url)
	if err != nil {
		t.Fatal(err)
	}
	c := redis.NewClient(o)
	defer c.Close()
	ctx := context.Background()
	keys, err := c.Keys(ctx, prefix+"*").Result()
	if err != nil || len(keys) == 0 {
		t.Fatalf("keys under %s: %v %v", prefix, keys, err)
	}
	if err := c.Del(ctx, keys...).Err(); err != nil {
		t.Fatal(err)
	}
}

// Service.Reserve charges the quotas with the buckets, names them in its
// charges, and its settlement splits the quota charges per pool.
func TestReserveQuotas(t *testing.T) {
	forStores(t, func(t *testing.T, kind string) {
		clock := &quotaClock{}
		clock.set(fallBackNoon)
		s := startQuota(t, kind, clock, nil)
		var settled []Settlement
		var mu sync.Mutex
		s.svc.Reservations().SetRecorder(func(_ context.Context, st Settlement) {
			mu.Lock()
			settled = append(settled, st)
			mu.Unlock()
		})
		r := contract.Request{Provider: "openai", Tier: "free", User: "ann", Org: "acme", Estimate: 60}
		got, err := s.svc.Reserve(context.Background(), r, 0)
		if err != nil || !got.Allowed {
			t.Fatalf("Reserve = %+v, %v", got, err)
		}
		var scopes []contract.Scope
		for _, c := range got.Charges {
			scopes = append(scopes, c.Scope)
		}
		if diff := cmp.Diff([]contract.Scope{"user", ScopeQuota, "org", ScopeQuota, "provider"}, scopes); diff != "" {
			t.Errorf("charge scopes (-want +got):\n%s", diff)
		}
		uq := got.Charges[1]
		if uq.Pool != (ledger.Pool{Scope: "user", Subject: "ann", Provider: "openai"}) || uq.Capacity != 100 || uq.Result.Remaining != 40 || !uq.Reset.Equal(fallBackEnd) {
			t.Errorf("user quota charge = %+v", uq)
		}
		refused, err := s.svc.Reserve(context.Background(), r, 0)
		if err != nil || refused.Allowed || refused.Charges[1].Result.Allowed || refused.Reservation.ID != "" {
			t.Fatalf("second Reserve = %+v, %v, want refused by the user quota", refused, err)
		}
		if _, err := s.svc.Reservations().Settle(context.Background(), got.Reservation.ID, 30, ledger.KindConsume); err != nil {
			t.Fatal(err)
		}
		mu.Lock()
		defer mu.Unlock()
		if len(settled) != 1 {
			t.Fatalf("settlements = %+v, want 1", settled)
		}
		st := settled[0]
		if st.Owner != (Owner{UserID: "ann", OrgID: "acme", Provider: "openai", Tier: "free"}) || len(st.Quotas) != 2 || st.Quotas[0].FromWindow != 30 || st.Quotas[1].Pool.Scope != "org" {
			t.Errorf("settlement = %+v", st)
		}
		// The refund reached the store: 70 left of the user's 100.
		again, err := s.svc.Reserve(context.Background(), contract.Request{Provider: "openai", Tier: "free", User: "ann", Estimate: 70}, 0)
		if err != nil || !again.Allowed || again.Charges[1].Result.Remaining != 0 {
			t.Errorf("Reserve of the 70 left = %+v, %v", again, err)
		}
	})
}

// unseededStore never has state for a quota pool: seeding does not help,
// and the second ErrUnseeded is a store failure answered by the failure
// mode (deny in the quota policy).
type unseededStore struct{ store.Store }

func (u unseededStore) Decide(ctx context.Context, items []store.Item) (store.Decision, error) {
	for i, it := range items {
		if it.Algorithm == store.Quota {
			return store.Decision{}, &store.UnseededError{Items: []int{i}}
		}
	}
	return u.Store.Decide(ctx, items)
}

func (u unseededStore) Seed(context.Context, []store.Seed) error { return nil }

func TestQuotaStillUnseededIsAFailure(t *testing.T) {
	clock := &quotaClock{}
	clock.set(fallBackNoon)
	s := startQuotaOn(t, "memory", clock, nil, func(st store.Store) store.Store { return unseededStore{st} })
	resp, err := s.client.ShouldRateLimit(context.Background(), &rlsv3.RateLimitRequest{Domain: contract.Domain, HitsAddend: 1,
		Descriptors: envoyDescriptors(contract.Request{Provider: "openai", Tier: "free", User: "ann", Estimate: 1})})
	if err != nil || resp.GetOverallCode() != over {
		t.Errorf("ShouldRateLimit = %v, %v, want OVER_LIMIT by failure mode deny", resp, err)
	}
	if _, err := s.svc.Reserve(context.Background(), contract.Request{Provider: "openai", Tier: "free", User: "ann", Estimate: 1}, 0); !errors.Is(err, store.ErrUnseeded) {
		t.Errorf("Reserve = %v, want ErrUnseeded", err)
	}
}

// 64 concurrent requests against an organisation quota of 150 admit
// exactly 50 of 3 tokens each: never more than the allowance.
func TestQuotaConcurrent(t *testing.T) {
	forStores(t, func(t *testing.T, kind string) {
		clock := &quotaClock{}
		clock.set(fallBackNoon)
		s := startQuota(t, kind, clock, nil)
		var admitted atomic.Int64
		var wg sync.WaitGroup
		for i := range 64 {
			wg.Go(func() {
				ds := envoyDescriptors(contract.Request{Provider: "openai", Tier: "free", User: "u" + strconv.Itoa(i), Org: "acme", Estimate: 3})
				resp, err := s.client.ShouldRateLimit(context.Background(), &rlsv3.RateLimitRequest{Domain: contract.Domain, HitsAddend: 3, Descriptors: ds})
				if err != nil {
					t.Errorf("ShouldRateLimit: %v", err)
					return
				}
				if resp.GetOverallCode() == okc {
					admitted.Add(1)
				}
			})
		}
		wg.Wait()
		if got := admitted.Load(); got != 50 {
			t.Errorf("admitted %d of 64 requests of 3 tokens against an org quota of 150, want exactly 50", got)
		}
	})
}
