package pgledger

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/leakytokens/leaky/internal/testenv"
	"github.com/leakytokens/leaky/ratelimit/ledger"
	"github.com/leakytokens/leaky/ratelimit/ledger/ledgertest"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

// openAt opens a ledger on url in schema, closed at cleanup.
func openAt(t *testing.T, url, schema string) *Ledger {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	l, err := Open(ctx, url, Options{Schema: schema, MaxConns: 24})
	if err != nil {
		t.Fatalf("Open() = %v", err)
	}
	t.Cleanup(l.Close)
	return l
}

// open returns a ledger on a database of the test's own.
func open(t *testing.T) *Ledger { return openAt(t, testenv.PostgresURL(t), "ledger") }

func TestContract(t *testing.T) {
	url := testenv.PostgresURL(t)
	n := 0
	var mu sync.Mutex
	ledgertest.Run(t, func(t *testing.T) ledger.Ledger {
		mu.Lock()
		n++
		schema := fmt.Sprintf("contract_%d", n)
		mu.Unlock()
		return openAt(t, url, schema)
	})
}

// TestSchemasAreSeparate: two schemas of one database share nothing, and
// opening again (migrating again, concurrently) changes nothing.
func TestSchemasAreSeparate(t *testing.T) {
	url := testenv.PostgresURL(t)
	ctx := ledgertest.Ctx(t)
	var wg sync.WaitGroup
	ls := make([]*Ledger, 4)
	for i := range ls {
		wg.Go(func() { ls[i] = openAt(t, url, []string{"one", "two"}[i%2]) })
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	u := ledgertest.Usage("r1", "u1", "", ledgertest.W1, 5, 0)
	if ok, err := ls[0].RecordUsage(ctx, u, ledger.NewUsageEvent("", u)); !ok || err != nil {
		t.Fatalf("RecordUsage() = %v, %v", ok, err)
	}
	for i, want := range []int64{5, 0, 5, 0} {
		st, err := ls[i].QuotaState(ctx, ledgertest.UserPool("u1"), ledgertest.W1)
		if err != nil || st.Used != want {
			t.Errorf("schema %d QuotaState() = %+v, %v, want used %d", i%2, st, err, want)
		}
	}
	var versions int
	if err := ls[0].pool.QueryRow(ctx, "SELECT count(*) FROM ledger_schema_migrations").Scan(&versions); err != nil || versions != 1 {
		t.Errorf("recorded migrations = %d, %v, want 1", versions, err)
	}
}

func TestOpenRefuses(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	if _, err := Open(ctx, "postgres://u:hunter2@127.0.0.1:1/db?connect_timeout=1", Options{}); err == nil || strings.Contains(err.Error(), "hunter2") {
		t.Errorf("Open(unreachable) = %v, want an error without the password", err)
	}
	if _, err := Open(ctx, "postgres://127.0.0.1:1/db", Options{Schema: "Bad-Name"}); err == nil {
		t.Error("Open(schema Bad-Name) = nil error, want one")
	}
}

// publisher collects what relays publish.
type publisher struct {
	mu  sync.Mutex
	evs []ledger.Event
}

func (p *publisher) publish(_ context.Context, evs []ledger.Event) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.evs = append(p.evs, evs...)
	return nil
}

func (p *publisher) ids() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]string, len(p.evs))
	for i, e := range p.evs {
		out[i] = e.ID
	}
	return out
}

// TestTwoPoolsRelay: relays on two pools (two processes) publish every
// event once, none lost.
func TestTwoPoolsRelay(t *testing.T) {
	url := testenv.PostgresURL(t)
	a, b := openAt(t, url, "ledger"), openAt(t, url, "ledger")
	ctx := ledgertest.Ctx(t)
	var written []string
	for i := range 150 {
		u := ledgertest.Usage(fmt.Sprintf("r%d", i), fmt.Sprintf("u%d", i%7), "", ledgertest.W1, 1, 0)
		ev := ledger.NewUsageEvent("", u)
		if ok, err := a.RecordUsage(ctx, u, ev); !ok || err != nil {
			t.Fatalf("RecordUsage() = %v, %v", ok, err)
		}
		written = append(written, ev.ID)
	}
	var p publisher
	var wg sync.WaitGroup
	for _, l := range []*Ledger{a, b, a, b} {
		wg.Go(func() {
			for deadline := time.Now().Add(90 * time.Second); time.Now().Before(deadline); {
				if _, err := l.Relay(ctx, 4, p.publish); err != nil {
					t.Errorf("Relay() = %v", err)
					return
				}
				if len(p.ids()) >= len(written) {
					return
				}
			}
		})
	}
	wg.Wait()
	got := map[string]int{}
	for _, id := range p.ids() {
		got[id]++
	}
	want := map[string]int{}
	for _, id := range written {
		want[id] = 1
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("publications per event (-want +got):\n%s", diff)
	}
}

// TestOutOfOrderCommit: a transaction that wrote its event first but
// commits last is published by a later relay, not skipped.
func TestOutOfOrderCommit(t *testing.T) {
	l := open(t)
	ctx := ledgertest.Ctx(t)
	early := ledger.NewUsageEvent("", ledgertest.Usage("early", "u1", "", ledgertest.W1, 1, 0))
	tx, err := l.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck // committed below
	if err := insertEvents(ctx, tx, early); err != nil {
		t.Fatalf("insertEvents() = %v", err)
	}
	late := ledgertest.Usage("late", "u2", "", ledgertest.W1, 1, 0)
	lateEv := ledger.NewUsageEvent("", late)
	if ok, err := l.RecordUsage(ctx, late, lateEv); !ok || err != nil {
		t.Fatalf("RecordUsage() = %v, %v", ok, err)
	}
	var p publisher
	if n, err := l.Relay(ctx, 10, p.publish); n != 1 || err != nil {
		t.Errorf("Relay() before the early commit = %d, %v, want 1", n, err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatalf("Commit() = %v", err)
	}
	if n, err := l.Relay(ctx, 10, p.publish); n != 1 || err != nil {
		t.Errorf("Relay() after the early commit = %d, %v, want 1", n, err)
	}
	if diff := cmp.Diff([]string{lateEv.ID, early.ID}, p.ids()); diff != "" {
		t.Errorf("published (-want +got):\n%s", diff)
	}
}

// TestRelayKilledAfterSend: a relay that sent its events and then dies
// (its context cancelled, the commit of the marks lost) leaves them
// unpublished; the next relay publishes them again.
func TestRelayKilledAfterSend(t *testing.T) {
	l := open(t)
	ctx := ledgertest.Ctx(t)
	u := ledgertest.Usage("r1", "u1", "", ledgertest.W1, 1, 0)
	ev := ledger.NewUsageEvent("", u)
	if ok, err := l.RecordUsage(ctx, u, ev); !ok || err != nil {
		t.Fatalf("RecordUsage() = %v, %v", ok, err)
	}
	var sent publisher
	dying, kill := context.WithCancel(ctx)
	_, err := l.Relay(dying, 10, func(c context.Context, evs []ledger.Event) error {
		_ = sent.publish(c, evs)
		kill()
		return nil
	})
	if !errors.Is(err, context.Canceled) {
		t.Errorf("Relay(killed) = %v, want context.Canceled", err)
	}
	// The dead relay's session holds its row locks until the server sees
	// it gone; the next relay skips them until then.
	var again publisher
	for deadline := time.Now().Add(60 * time.Second); len(again.ids()) == 0 && time.Now().Before(deadline); {
		if _, err := l.Relay(ctx, 10, again.publish); err != nil {
			t.Fatalf("next Relay() = %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if diff := cmp.Diff([]string{ev.ID}, again.ids()); diff != "" || len(sent.ids()) != 1 {
		t.Errorf("sent %v then %v, want the event twice (at least once)", sent.ids(), again.ids())
	}
}

// TestTooLongRefusedBeforeTheDatabase: the bounds are checked by the
// ledger, with ledger.ErrInvalid, not by a constraint.
func TestTooLongRefusedBeforeTheDatabase(t *testing.T) {
	l := open(t)
	l.Close() // nothing may reach the server
	u := ledgertest.Usage(strings.Repeat("x", 129), "u1", "", ledgertest.W1, 1, 0)
	if _, err := l.RecordUsage(context.Background(), u, ledger.NewUsageEvent("", u)); !errors.Is(err, ledger.ErrInvalid) {
		t.Errorf("RecordUsage(id 129 bytes) = %v, want ErrInvalid", err)
	}
}
