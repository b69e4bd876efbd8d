package ratelimit

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	providersstub "github.com/leakytokens/leaky/providers-stub"
	"github.com/leakytokens/leaky/ratelimit/ledger"
)

// stallingLedger is a real ledger whose RecordUsage, while stalled, waits
// for its context to end (as a stalled PostgreSQL does), or fails with
// fail when set; it counts the calls.
type stallingLedger struct {
	ledger.Ledger
	stalled atomic.Bool
	fail    error
	calls   atomic.Int64
}

func (l *stallingLedger) RecordUsage(ctx context.Context, u ledger.Usage, ev ledger.Event) (bool, error) {
	l.calls.Add(1)
	if l.fail != nil {
		return false, l.fail
	}
	if l.stalled.Load() {
		<-ctx.Done()
		return false, fmt.Errorf("record usage: %w", ctx.Err())
	}
	return l.Ledger.RecordUsage(ctx, u, ev)
}

// A stalled ledger does not hold up the consume (one attempt of a second
// on the request path); the writer records the usage once the ledger is
// back.
func TestTokensConsumeLedgerStalls(t *testing.T) {
	led := &stallingLedger{Ledger: newLedger(t, "memory")}
	led.stalled.Store(true)
	e := startTokensOn(t, led, providersstub.Knobs{}, nil)
	user := uuid.NewString()
	start := time.Now()
	a := e.do(t, "POST", "/api/v1/tokens/consume", e.token(t, user, []string{"USER"}),
		`{"userId":"`+user+`","provider":"openai","tokens":100,"prompt":"hi"}`)
	// Retrying the write on the request path took over 20 s; one attempt
	// takes a second: 10 s is a wide margin either way.
	if took := time.Since(start); a.status != 200 || took > 10*time.Second {
		t.Fatalf("consume: %d %s after %v, want 200 without waiting for the ledger", a.status, a.body, took)
	}
	if us := e.usages(t); len(us) != 0 {
		t.Fatalf("usages %+v recorded by a stalled ledger", us)
	}
	led.stalled.Store(false)
	deadline := time.Now().Add(time.Minute)
	us := e.usages(t)
	for len(us) == 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
		us = e.usages(t)
	}
	if len(us) != 1 || us[0].Estimate != 100 || us[0].Kind != ledger.KindConsume {
		t.Fatalf("usages %+v, want the consume recorded once by the writer", us)
	}
}

// A usage the ledger refuses as invalid or conflicting is tried once,
// never queued for retries.
func TestTokensRecordRefusedNotRetried(t *testing.T) {
	for _, refusal := range []error{ledger.ErrInvalid, ledger.ErrConflict} {
		t.Run(refusal.Error(), func(t *testing.T) {
			led := &stallingLedger{Ledger: newLedger(t, "memory"), fail: fmt.Errorf("record usage: %w", refusal)}
			e := startTokensOn(t, led, providersstub.Knobs{}, nil)
			user := uuid.NewString()
			if a := e.do(t, "POST", "/api/v1/tokens/consume", e.token(t, user, []string{"USER"}),
				`{"userId":"`+user+`","provider":"openai","tokens":100,"prompt":"hi"}`); a.status != 200 {
				t.Fatalf("consume: %d %s", a.status, a.body)
			}
			if n, p := led.calls.Load(), e.svc.usages.pending.Load(); n != 1 || p != 0 {
				t.Fatalf("%d writes, %d queued; want 1 write and none queued", n, p)
			}
		})
	}
}

// syncBuffer is a log destination safe for concurrent writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// What the ledger misses is bounded and logged: a usage arriving with the
// queue full, and one still failing when the writer stops, are each logged
// with their usage id.
func TestUsageWriterBounded(t *testing.T) {
	var logs syncBuffer
	w := newUsageWriter(slog.New(slog.NewTextHandler(&logs, nil)), 1)
	w.drainFor = time.Second
	led := &stallingLedger{Ledger: ledger.NewMemory(ledger.MemoryOptions{}), fail: errInjected}
	usage := func(id string) (ledger.Usage, ledger.Event) {
		u := ledger.Usage{ID: id, Kind: ledger.KindConsume, UserID: uuid.NewString(), Provider: "openai",
			Tier: "free", Estimate: 10, Actual: 10, At: time.Now().UTC()}
		return u, ledger.NewUsageEvent(ledger.NewID(), u)
	}
	u1, ev1 := usage("usage-queued")
	w.write(context.Background(), led, u1, ev1) // fails: queued
	u2, ev2 := usage("usage-overflow")
	w.write(context.Background(), led, u2, ev2) // a backlog: straight to the full queue
	if n := led.calls.Load(); n != 1 || !strings.Contains(logs.String(), "usage_id=usage-overflow") {
		t.Fatalf("%d writes; log %q; want 1 write and usage-overflow logged", n, logs.String())
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := w.run(ctx); err != nil {
		t.Fatal(err)
	}
	if n := led.calls.Load(); n != 2 || !strings.Contains(logs.String(), "usage_id=usage-queued") {
		t.Fatalf("%d writes; log %q; want usage-queued tried once more and logged", n, logs.String())
	}
	u3, ev3 := usage("usage-late")
	w.write(context.Background(), led, u3, ev3) // the writer stopped: logged, not queued
	if !strings.Contains(logs.String(), "usage_id=usage-late") || w.pending.Load() != 0 {
		t.Fatalf("log %q, %d pending", logs.String(), w.pending.Load())
	}
}
