package ratelimit

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/leakytokens/leaky/internal/testenv"
	"github.com/leakytokens/leaky/ratelimit/ledger"
	"github.com/leakytokens/leaky/ratelimit/pgledger"
	"github.com/leakytokens/leaky/ratelimit/store"
)

// ledgerKinds are the ledgers the saga tests run on: the reference
// implementation and PostgreSQL.
var ledgerKinds = []string{"memory", "postgres"}

// newLedger opens a real ledger of kind: ledger.Memory, or pgledger on a
// database of the test's own in a schema of its own (closed at cleanup).
func newLedger(t *testing.T, kind string) ledger.Ledger {
	t.Helper()
	switch kind {
	case "memory":
		return ledger.NewMemory(ledger.MemoryOptions{})
	case "postgres":
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		schema := "t_" + strings.ReplaceAll(uuid.NewString(), "-", "")
		l, err := pgledger.Open(ctx, testenv.PostgresURL(t), pgledger.Options{Schema: schema})
		if err != nil {
			t.Fatalf("pgledger.Open: %v", err)
		}
		t.Cleanup(l.Close)
		return l
	}
	t.Fatalf("unknown ledger kind %q", kind)
	return nil
}

var errInjected = errors.New("injected failure")

// flakyLedger is a real ledger whose next failSteps StepSaga calls and
// next failStarts StartSaga calls fail before reaching it.
type flakyLedger struct {
	ledger.Ledger
	failSteps, failStarts atomic.Int32
}

func (f *flakyLedger) StartSaga(ctx context.Context, s ledger.Saga, ev ledger.Event) (ledger.Saga, bool, error) {
	if f.failStarts.Add(-1) >= 0 {
		return ledger.Saga{}, false, errInjected
	}
	return f.Ledger.StartSaga(ctx, s, ev)
}

func (f *flakyLedger) StepSaga(ctx context.Context, id string, from, to ledger.Status, reason string, evs ...ledger.Event) (ledger.Saga, error) {
	if f.failSteps.Add(-1) >= 0 {
		return ledger.Saga{}, errInjected
	}
	return f.Ledger.StepSaga(ctx, id, from, to, reason, evs...)
}

// flakyStore is the memory store whose next failAdjust Adjust calls fail
// before reaching it.
type flakyStore struct {
	*store.Memory
	failAdjust atomic.Int32
}

func (f *flakyStore) Adjust(ctx context.Context, adj []store.Adjustment) error {
	if f.failAdjust.Add(-1) >= 0 {
		return errInjected
	}
	return f.Memory.Adjust(ctx, adj)
}

// usageRecord is what a usage event in the ledger's outbox says.
type usageRecord struct {
	UsageID  string      `json:"usageId"`
	Kind     ledger.Kind `json:"kind"`
	Estimate int64       `json:"estimate"`
	Actual   int64       `json:"actual"`
}

// usages returns every usage the ledger recorded so far, in order, read
// from its outbox as the relay would publish them.
func (e *tokensEnv) usages(t *testing.T) []usageRecord {
	t.Helper()
	for {
		n, err := e.led.Relay(context.Background(), 100, func(_ context.Context, evs []ledger.Event) error {
			for _, ev := range evs {
				if ev.Type != ledger.TypeUsage {
					continue
				}
				var u usageRecord
				if err := json.Unmarshal(ev.Payload, &u); err != nil {
					return err
				}
				e.recorded = append(e.recorded, u)
			}
			return nil
		})
		if err != nil {
			t.Fatalf("relay: %v", err)
		}
		if n == 0 {
			return append([]usageRecord(nil), e.recorded...)
		}
	}
}

// plan is the quota the service plans now for pool (tier for a user
// pool); the test fails when none applies.
func (e *tokensEnv) plan(t *testing.T, pool ledger.Pool, tier string) *quotaPlan {
	t.Helper()
	q := e.svc.tokens.quotaPlanOf(pool, tier)
	if q == nil {
		t.Fatalf("no quota planned for %+v", pool)
	}
	return q
}

// seedPool has the service seed pool's quota in the store from the ledger,
// as its first charge would, so that credits to the store are kept.
func (e *tokensEnv) seedPool(t *testing.T, pool ledger.Pool, tier string) {
	t.Helper()
	q := e.plan(t, pool, tier)
	if err := e.svc.seed(context.Background(), []store.Item{q.item}, []*quotaPlan{q}, []int{0}); err != nil {
		t.Fatalf("seed: %v", err)
	}
}

// balance is pool's purchased balance as the store holds it (the
// remaining tokens of its planned quota item less what the window has
// left) and as the ledger records it.
func (e *tokensEnv) balance(t *testing.T, pool ledger.Pool, tier string) (fast, durable int64) {
	t.Helper()
	q := e.plan(t, pool, tier)
	return storeBalance(t, e.st, q), ledgerBalance(t, e.led, q)
}

// storeBalance reads q's pool in st by deciding its item with no hits:
// Remaining less the allowance is the purchased balance while the window
// is unused.
func storeBalance(t *testing.T, st store.Store, q *quotaPlan) int64 {
	t.Helper()
	it := q.item
	it.Hits = 0
	dec, err := st.Decide(context.Background(), []store.Item{it})
	if err != nil {
		t.Fatalf("decide %s: %v", it.Key, err)
	}
	return dec.Results[0].Remaining - it.Limit
}

// ledgerBalance is q's pool's purchased balance in the ledger's record.
func ledgerBalance(t *testing.T, l ledger.Quotas, q *quotaPlan) int64 {
	t.Helper()
	st, err := l.QuotaState(context.Background(), q.pool, q.start)
	if err != nil {
		t.Fatalf("quota state: %v", err)
	}
	if st.Used != 0 {
		t.Fatalf("quota state: %d used, want 0", st.Used)
	}
	return st.Purchased
}
