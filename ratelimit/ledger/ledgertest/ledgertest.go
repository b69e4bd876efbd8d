// Package ledgertest is the contract every ledger.Ledger passes: Run it
// against an implementation with a function that returns a fresh, empty
// ledger for each test.
package ledgertest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/leakytokens/leaky/ratelimit/ledger"
)

// Open returns a new, empty ledger that the test owns (closed at its
// cleanup if it needs closing).
type Open func(t *testing.T) ledger.Ledger

// Run runs the contract suite, each case on a ledger of its own.
func Run(t *testing.T, open Open) {
	for _, tc := range []struct {
		name string
		run  func(*testing.T, ledger.Ledger)
	}{
		{"UsageRecordedOnce", testUsageOnce},
		{"QuotaState", testQuotaState},
		{"InvalidWritesNothing", testInvalid},
		{"SagaStartIdempotent", testSagaStart},
		{"StepSagaCAS", testStepCAS},
		{"AllocationCreditsOnce", testCreditOnce},
		{"WindowOnlyCredit", testWindowCredit},
		{"PendingCredits", testPendingCredits},
		{"FailedKeepsReasonAndRevokes", testFailed},
		{"StaleSagas", testStale},
		{"RelayPublishError", testRelayError},
		{"RelayContextEnds", testRelayCtx},
		{"RelayOrderAndBatch", testRelayOrder},
		{"Prune", testPrune},
		{"ConcurrentRelays", testConcurrentRelays},
		{"EventsNeverBeforeData", testEventsAfterData},
		{"ConcurrentWrites", testConcurrentWrites},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.run(t, open(t))
		})
	}
}

// Ctx is a context for one test's calls, bounded generously for a loaded
// machine.
func Ctx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

var (
	// W1 and W2 are two consecutive quota windows.
	W1 = time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	W2 = time.Date(2026, 4, 1, 0, 0, 0, 0, time.UTC)
	// T0 is a moment sagas are created at.
	T0 = time.Date(2026, 3, 15, 12, 0, 0, 0, time.UTC)
)

// UserPool and OrgPool name a user's and an organisation's pool.
func UserPool(user string) ledger.Pool {
	return ledger.Pool{Scope: "user", Subject: user, Provider: "openai"}
}
func OrgPool(org string) ledger.Pool {
	return ledger.Pool{Scope: "org", Subject: org, Provider: "openai"}
}

// Usage returns a consume of user (charged to org when not "") taking
// fromWindow of W and fromPurchased from the balance of each pool charged.
func Usage(id, user, org string, w time.Time, fromWindow, fromPurchased int64) ledger.Usage {
	u := ledger.Usage{ID: id, Kind: ledger.KindConsume, UserID: user, OrgID: org, Provider: "openai",
		Tier: "free", Estimate: fromWindow + fromPurchased, Actual: fromWindow + fromPurchased, At: T0,
		Quotas: []ledger.QuotaCharge{{Pool: UserPool(user), Window: w, FromWindow: fromWindow, FromPurchased: fromPurchased}}}
	if org != "" {
		u.Quotas = append(u.Quotas, ledger.QuotaCharge{Pool: OrgPool(org), Window: w, FromWindow: fromWindow, FromPurchased: fromPurchased})
	}
	return u
}

// Saga returns a purchase of tokens for pool by user with idempotency key.
func Saga(user string, pool ledger.Pool, tokens int64, key string) ledger.Saga {
	return ledger.Saga{ID: ledger.NewID(), UserID: user, Pool: pool, Tokens: tokens, IdempotencyKey: key, CreatedAt: T0}
}

func record(t *testing.T, l ledger.Ledger, u ledger.Usage) ledger.Event {
	t.Helper()
	ev := ledger.NewUsageEvent("", u)
	ok, err := l.RecordUsage(Ctx(t), u, ev)
	if err != nil || !ok {
		t.Fatalf("RecordUsage(%s) = %v, %v, want true, nil", u.ID, ok, err)
	}
	return ev
}

func start(t *testing.T, l ledger.Ledger, s ledger.Saga) (ledger.Saga, ledger.Event) {
	t.Helper()
	s.Status = ledger.StatusStarted
	ev := ledger.NewPurchaseEvent("", s)
	got, created, err := l.StartSaga(Ctx(t), s, ev)
	if err != nil || !created {
		t.Fatalf("StartSaga(%s) = %v, %v, want created", s.ID, created, err)
	}
	return got, ev
}

// step moves s through each status of to in turn, with its event.
func step(t *testing.T, l ledger.Ledger, s ledger.Saga, reason string, to ...ledger.Status) ledger.Saga {
	t.Helper()
	for _, st := range to {
		next := s
		next.Status = st
		got, err := l.StepSaga(Ctx(t), s.ID, s.Status, st, reason, ledger.NewPurchaseEvent("", next))
		if err != nil {
			t.Fatalf("StepSaga(%s, %s → %s) = %v", s.ID, s.Status, st, err)
		}
		s = got
	}
	return s
}

func quota(t *testing.T, l ledger.Ledger, p ledger.Pool, w time.Time) [2]int64 {
	t.Helper()
	st := quotaState(t, l, p, w)
	return [2]int64{st.Used, st.Purchased}
}

func quotaState(t *testing.T, l ledger.Ledger, p ledger.Pool, w time.Time) ledger.QuotaState {
	t.Helper()
	st, err := l.QuotaState(Ctx(t), p, w)
	if err != nil {
		t.Fatalf("QuotaState(%v, %v) = %v", p, w, err)
	}
	return st
}

// drain relays until nothing is left and returns what was published.
func drain(t *testing.T, l ledger.Ledger) []ledger.Event {
	t.Helper()
	var out []ledger.Event
	for {
		n, err := l.Relay(Ctx(t), 100, func(_ context.Context, evs []ledger.Event) error {
			out = append(out, evs...)
			return nil
		})
		if err != nil {
			t.Fatalf("Relay() = %v", err)
		}
		if n == 0 {
			return out
		}
	}
}

func ids(evs []ledger.Event) []string {
	out := make([]string, len(evs))
	for i, e := range evs {
		out[i] = e.ID
	}
	return out
}

// field reads one string field of an event's JSON payload.
func field(ev ledger.Event, name string) (string, error) {
	var m map[string]any
	if err := json.Unmarshal(ev.Payload, &m); err != nil {
		return "", fmt.Errorf("event %s payload: %w", ev.ID, err)
	}
	s, ok := m[name].(string)
	if !ok {
		return "", fmt.Errorf("event %s payload has no string %q", ev.ID, name)
	}
	return s, nil
}

// samePayload compares events with their payloads as JSON values: a
// store may keep JSON in a normal form (PostgreSQL's jsonb reorders keys).
var samePayload = cmp.Transformer("payload", func(e ledger.Event) any {
	var v any
	if err := json.Unmarshal(e.Payload, &v); err != nil {
		v = string(e.Payload)
	}
	return eventJSON{e.ID, e.Type, e.Key, e.Schema, e.OccurredAt, v}
})

type eventJSON struct {
	ID, Type, Key string
	Schema        int
	OccurredAt    time.Time
	Payload       any
}

func wantErr(t *testing.T, what string, err, want error) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Errorf("%s = %v, want %v", what, err, want)
	}
}
