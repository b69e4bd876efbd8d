package ratelimit

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	ratelimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"github.com/google/go-cmp/cmp"

	"github.com/leakytokens/leaky/internal/contract"
	"github.com/leakytokens/leaky/ratelimit/ledger"
	"github.com/leakytokens/leaky/ratelimit/store"
)

// envoyDescriptors is what Envoy sends for r: r.Descriptors() as protos.
func envoyDescriptors(r contract.Request) []*ratelimitv3.RateLimitDescriptor {
	var out []*ratelimitv3.RateLimitDescriptor
	for _, entries := range r.Descriptors() {
		d := &ratelimitv3.RateLimitDescriptor{}
		for _, e := range entries {
			d.Entries = append(d.Entries, &ratelimitv3.RateLimitDescriptor_Entry{Key: e.Key, Value: e.Value})
		}
		out = append(out, d)
	}
	return out
}

// plainRequests covers every shape the plain path plans: each scope, an
// unknown tier, a provider without a pool, values that are hashed, and an
// estimate of 0 (charged as 1).
var plainRequests = []contract.Request{
	{Provider: "openai", Tier: "free", User: "alice", Estimate: 600},
	{Provider: "openai", Tier: "pro", User: "bob", Org: "acme", Estimate: 1000},
	{Provider: "openai", Tier: "platinum", User: "dave", Estimate: 1001},
	{Provider: "qwen", Tier: "free", User: "erin", Org: "acme", Estimate: 10},
	{Provider: "openai", Tier: "free", User: "frank:" + strings.Repeat("x", 80), Estimate: 0},
	{Provider: "openai", Tier: "", User: "gina", Org: "acme", Estimate: 5},
	{Provider: "openai", User: "hal", Estimate: 5},
}

type plannedItem struct {
	Scope string
	Item  store.Item
}

func planned(plans []plan) []plannedItem {
	var out []plannedItem
	for _, p := range plans {
		if p.hasItem {
			out = append(out, plannedItem{p.scope, p.item})
		}
	}
	return out
}

// TestPlanRequestMatchesShouldRateLimit: the plain path plans the same
// items (keys, limits, hits) as ShouldRateLimit's planning of the
// descriptors Envoy builds from the same request.
func TestPlanRequestMatchesShouldRateLimit(t *testing.T) {
	s := start(t, testConfig(t, "memory", "policy.yaml"))
	l := s.svc.limits.Load()
	for _, r := range plainRequests {
		req := &rlsv3.RateLimitRequest{Domain: contract.Domain, HitsAddend: uint32(r.Estimate), Descriptors: envoyDescriptors(r)}
		want := planned(s.svc.plan(l, req))
		got := planned(planRequest(l.policy, r, time.Now()))
		if len(want) == 0 {
			t.Fatalf("%+v: ShouldRateLimit plans no bucket; the case tests nothing", r)
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("%+v: plain plan differs from ShouldRateLimit's (-envoy +plain):\n%s", r, diff)
		}
	}
	// The keys are the contract's, not re-derived here.
	got := planned(planRequest(l.policy, plainRequests[1], time.Now()))
	keys := []string{got[0].Item.Key, got[1].Item.Key, got[2].Item.Key}
	if diff := cmp.Diff([]string{"u:openai:bob", "o:openai:acme", "p:openai"}, keys); diff != "" {
		t.Errorf("bucket keys (-want +got):\n%s", diff)
	}
}

// peek returns each item's remaining in st without charging it.
func peek(t *testing.T, st store.Store, items []store.Item) []int64 {
	t.Helper()
	zero := make([]store.Item, len(items))
	for i, it := range items {
		zero[i] = it
		zero[i].Hits = 0
	}
	dec, err := st.Decide(context.Background(), zero)
	if err != nil {
		t.Fatalf("peek: %v", err)
	}
	out := make([]int64, len(items))
	for i, r := range dec.Results {
		out[i] = r.Remaining
	}
	return out
}

// TestReserveChargesAsShouldRateLimit runs the same requests through
// ShouldRateLimit on one service and through Reserve on another: each step
// is admitted or refused alike, reports the same buckets, and leaves the
// same remaining in every bucket; a refused step charges nothing on either.
// (The test policy leaks 0.001 token/s, so time passing changes nothing.)
func TestReserveChargesAsShouldRateLimit(t *testing.T) {
	for _, kind := range []string{"memory", "redis"} {
		t.Run(kind, func(t *testing.T) {
			cfg := func() Config {
				c := testConfig(t, kind, "policy.yaml")
				c.RedisTimeout = 5 * time.Second // compare decisions, not timeouts of a loaded machine
				return c
			}
			envoy, plain := start(t, cfg()), start(t, cfg())
			pol := plain.svc.limits.Load().policy
			steps := []struct {
				r     contract.Request
				admit bool
			}{
				{contract.Request{Provider: "openai", Tier: "free", User: "alice", Estimate: 600}, true},
				{contract.Request{Provider: "openai", Tier: "free", User: "alice", Estimate: 600}, false}, // user bucket
				{contract.Request{Provider: "openai", Tier: "pro", User: "bob", Org: "acme", Estimate: 1000}, true},
				{contract.Request{Provider: "openai", Tier: "pro", User: "carol", Org: "acme", Estimate: 600}, false}, // org pool
				{contract.Request{Provider: "openai", Tier: "pro", User: "carol", Org: "acme", Estimate: 500}, true},
				{contract.Request{Provider: "openai", Tier: "platinum", User: "dave", Estimate: 1001}, false}, // default tier, never
				{contract.Request{Provider: "qwen", Tier: "free", User: "erin", Estimate: 10}, true},          // no provider pool
				{contract.Request{Provider: "openai", Tier: "free", User: "frank:" + strings.Repeat("x", 80)}, true},
			}
			var first Reservation
			for i, st := range steps {
				items := make([]store.Item, 0, 3)
				for _, p := range planRequest(pol, st.r, time.Now()) {
					items = append(items, p.item)
				}
				before := peek(t, envoy.svc.store, items)
				if diff := cmp.Diff(before, peek(t, plain.svc.store, items)); diff != "" {
					t.Fatalf("step %d: stores differ before (-envoy +plain):\n%s", i, diff)
				}
				resp := envoy.ask(t, contract.Domain, uint32(st.r.Estimate), envoyDescriptors(st.r)...)
				res, err := plain.svc.Reserve(context.Background(), st.r, 0)
				if err != nil {
					t.Fatalf("step %d: Reserve: %v", i, err)
				}
				if ok := resp.GetOverallCode() == rlsv3.RateLimitResponse_OK; ok != st.admit || res.Allowed != st.admit {
					t.Fatalf("step %d %+v: ShouldRateLimit OK %v, Reserve allowed %v; want %v", i, st.r, ok, res.Allowed, st.admit)
				}
				if res.Allowed == (res.Reservation.ID == "") {
					t.Errorf("step %d: reservation %+v with allowed %v", i, res.Reservation, res.Allowed)
				}
				if i == 0 {
					first = res.Reservation
				}
				compareStatuses(t, i, resp, res)
				after := peek(t, envoy.svc.store, items)
				if diff := cmp.Diff(after, peek(t, plain.svc.store, items)); diff != "" {
					t.Errorf("step %d: stores differ after (-envoy +plain):\n%s", i, diff)
				}
				for j := range items {
					want := before[j]
					if st.admit {
						want -= max(1, st.r.Estimate)
					}
					if after[j] != want {
						t.Errorf("step %d: %s remaining %d, want %d", i, items[j].Key, after[j], want)
					}
				}
			}
			// The plain path's reservation settles like any other.
			if _, err := plain.svc.Reservations().Settle(context.Background(), first.ID, 100, ledger.KindConsume); err != nil {
				t.Fatalf("Settle: %v", err)
			}
			items := []store.Item{planRequest(pol, steps[0].r, time.Now())[0].item}
			if got := peek(t, plain.svc.store, items)[0]; got != 900 {
				t.Errorf("alice after settling 100 of 600 = %d, want 900", got)
			}
		})
	}
}

// compareStatuses checks that ShouldRateLimit's statuses of descriptors with
// a rule match Reserve's charges one for one.
func compareStatuses(t *testing.T, step int, resp *rlsv3.RateLimitResponse, res Reserved) {
	t.Helper()
	type bucket struct {
		Scope     string
		Capacity  int64
		Remaining int64
		Refused   bool
	}
	var envoy, plain []bucket
	for _, st := range resp.GetStatuses() {
		if st.GetCurrentLimit() == nil {
			continue
		}
		envoy = append(envoy, bucket{st.GetCurrentLimit().GetName(), int64(st.GetCurrentLimit().GetRequestsPerUnit()),
			int64(st.GetLimitRemaining()), st.GetCode() == rlsv3.RateLimitResponse_OVER_LIMIT})
	}
	for _, c := range res.Charges {
		plain = append(plain, bucket{string(c.Scope), c.Capacity, c.Result.Remaining, !c.Result.Allowed})
	}
	if len(plain) == 0 {
		t.Fatalf("step %d: no buckets charged", step)
	}
	if diff := cmp.Diff(envoy, plain); diff != "" {
		t.Errorf("step %d: buckets differ (-ShouldRateLimit +Reserve):\n%s", step, diff)
	}
}

func TestReserveEdgeCases(t *testing.T) {
	s := start(t, testConfig(t, "memory", "policy.yaml"))
	ctx := context.Background()
	if _, err := s.svc.Reserve(ctx, contract.Request{Provider: "openai", Tier: "free", User: "x", Estimate: -1}, 0); err == nil {
		t.Error("negative estimate: want an error")
	}
	// No provider: Envoy builds no descriptor, so nothing is charged.
	res, err := s.svc.Reserve(ctx, contract.Request{Tier: "free", User: "x", Estimate: 5}, 0)
	if err != nil || !res.Allowed || len(res.Charges) != 0 {
		t.Errorf("no provider: %+v, %v; want allowed with no charges", res, err)
	}
	noPolicy := start(t, testConfig(t, "memory", "messaging.yaml"))
	if _, err := noPolicy.svc.Reserve(ctx, contract.Request{Provider: "openai", Tier: "free", User: "x"}, 0); !errors.Is(err, ErrNoPolicy) {
		t.Errorf("without a policy: %v, want ErrNoPolicy", err)
	}
}
