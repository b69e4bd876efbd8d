package kafkaevents

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/leakytokens/leaky/internal/kafkadev"
	"github.com/leakytokens/leaky/ratelimit/ledger"
)

// fakeOutbox is the ledger's Outbox in memory: rows in insertion order,
// claimed under one lock (so concurrent relays serialise, as SKIP LOCKED
// lets them skip), marked only when publish returns nil.
type fakeOutbox struct {
	mu         sync.Mutex
	rows       []outboxRow
	relayCalls atomic.Int64
}

type outboxRow struct {
	ev          ledger.Event
	publishedAt time.Time // zero: unpublished
}

func (o *fakeOutbox) add(evs ...ledger.Event) {
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, ev := range evs {
		o.rows = append(o.rows, outboxRow{ev: ev})
	}
}

func (o *fakeOutbox) Relay(ctx context.Context, n int, publish func(context.Context, []ledger.Event) error) (int, error) {
	o.relayCalls.Add(1)
	o.mu.Lock()
	defer o.mu.Unlock()
	var idx []int
	var evs []ledger.Event
	for i := range o.rows {
		if o.rows[i].publishedAt.IsZero() && len(evs) < n {
			idx = append(idx, i)
			evs = append(evs, o.rows[i].ev)
		}
	}
	if len(evs) == 0 {
		return 0, nil
	}
	if err := publish(ctx, evs); err != nil {
		return 0, err
	}
	for _, i := range idx {
		o.rows[i].publishedAt = time.Now()
	}
	return len(evs), nil
}

func (o *fakeOutbox) Prune(_ context.Context, before time.Time) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	kept := o.rows[:0]
	for _, r := range o.rows {
		if r.publishedAt.IsZero() || !r.publishedAt.Before(before) {
			kept = append(kept, r)
		}
	}
	n := len(o.rows) - len(kept)
	o.rows = kept
	return n, nil
}

// counts returns how many rows are unpublished and how many in all.
func (o *fakeOutbox) counts() (unpublished, all int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, r := range o.rows {
		if r.publishedAt.IsZero() {
			unpublished++
		}
	}
	return unpublished, len(o.rows)
}

// events makes n events of the spec's shape, spread over keys round robin;
// the payload names the event's index.
func events(n int, keys ...string) []ledger.Event {
	evs := make([]ledger.Event, n)
	at := time.Date(2026, 3, 29, 1, 30, 0, 123456789, time.UTC)
	for i := range evs {
		id := uuid.NewString()
		evs[i] = ledger.Event{
			ID:         id,
			Type:       ledger.TypeUsage,
			Key:        keys[i%len(keys)],
			Schema:     1,
			OccurredAt: at.Add(time.Duration(i) * time.Millisecond),
			Payload:    fmt.Appendf(nil, `{"eventId":%q,"type":"usage","seq":%d}`, id, i),
		}
	}
	return evs
}

// startBroker starts an embedded broker with topic token-usage, closed when
// the test ends.
func startBroker(t *testing.T, addr string) *kafkadev.Broker {
	t.Helper()
	b, err := kafkadev.Start(t.Context(), addr, DefaultTopic)
	if err != nil {
		t.Fatalf("kafkadev.Start: %v", err)
	}
	t.Cleanup(b.Close)
	return b
}

// newProducer returns a producer to brokers, closed when the test ends.
func newProducer(t *testing.T, brokers string, deliveryTimeout time.Duration) *Producer {
	t.Helper()
	p, err := NewProducer(Config{Brokers: brokers, DeliveryTimeout: deliveryTimeout, CloseTimeout: 5 * time.Second, Logger: testLogger(t)})
	if err != nil {
		t.Fatalf("NewProducer: %v", err)
	}
	t.Cleanup(p.Close)
	return p
}

func testLogger(t *testing.T) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// consume reads topic from the beginning with franz-go's client until it
// has seen n distinct event ids (the records it returns may repeat some:
// delivery is at least once), failing the test when they do not all arrive
// within a minute.
func consume(t *testing.T, addr, topic string, n int) []*kgo.Record {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatalf("kgo.NewClient: %v", err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	var got []*kgo.Record
	seen := map[string]bool{}
	for len(seen) < n {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("consumed %d distinct events of %s within a minute, want %d", len(seen), topic, n)
		}
		fs.EachError(func(topic string, p int32, err error) { t.Logf("fetch %s/%d: %v", topic, p, err) })
		fs.EachRecord(func(r *kgo.Record) {
			got = append(got, r)
			for _, h := range r.Headers {
				if h.Key == HeaderEventID {
					seen[string(h.Value)] = true
				}
			}
		})
	}
	return got
}

// eventually polls cond every 20ms for up to a minute.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within a minute", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
