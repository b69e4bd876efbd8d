package kafkaevents

import (
	"context"
	"errors"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/leakytokens/leaky/ratelimit/ledger"
)

// runRelay starts r.Run and returns a function that stops it and reports
// Run's error.
func runRelay(t *testing.T, r *Relay) (stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	var once sync.Once
	var err error
	stop = func() error {
		once.Do(func() { cancel(); err = <-done })
		return err
	}
	t.Cleanup(func() { stop() })
	return stop
}

func newRelay(t *testing.T, o ledger.Outbox, pub Publisher, opts RelayOptions) (*Relay, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	opts.Registerer = reg
	opts.Logger = testLogger(t)
	r, err := NewRelay(o, pub, opts)
	if err != nil {
		t.Fatalf("NewRelay: %v", err)
	}
	return r, reg
}

// ids returns the event-id header of every record, in order, grouped by key.
func idsByKey(evs []ledger.Event) map[string][]string {
	m := map[string][]string{}
	for _, ev := range evs {
		m[ev.Key] = append(m[ev.Key], ev.ID)
	}
	return m
}

func TestRelayPublishesTheWholeOutboxInOrder(t *testing.T) {
	b := startBroker(t, "127.0.0.1:0")
	o := &fakeOutbox{}
	evs := events(250, "user-a", "org-b", "user-c")
	o.add(evs...)
	r, reg := newRelay(t, o, newProducer(t, b.Addr(), 30*time.Second), RelayOptions{Batch: 100, Interval: time.Hour})
	stop := runRelay(t, r)

	got := consume(t, b.Addr(), DefaultTopic, len(evs))
	// A consumer may read the last batch before the relay has marked it
	// published: wait for the marks before stopping the relay.
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(10 * time.Millisecond) {
		if unpublished, _ := o.counts(); unpublished == 0 || time.Now().After(deadline) {
			break
		}
	}
	if err := stop(); err != nil {
		t.Errorf("Run after its context ended = %v, want nil", err)
	}
	gotByKey := map[string][]string{}
	for _, rec := range got {
		gotByKey[string(rec.Key)] = append(gotByKey[string(rec.Key)], wireOf(rec).Headers["event-id"])
	}
	if diff := cmp.Diff(idsByKey(evs), gotByKey); diff != "" {
		t.Errorf("event ids per key (-want +got):\n%s", diff)
	}
	if unpublished, _ := o.counts(); unpublished != 0 {
		t.Errorf("unpublished rows = %d, want 0", unpublished)
	}
	if n := testutil.ToFloat64(r.metrics.published); n != 250 {
		t.Errorf("published metric = %v, want 250", n)
	}
	if n, err := testutil.GatherAndCount(reg, "leaky_outbox_publish_lag_seconds"); err != nil || n != 1 {
		t.Errorf("lag histogram series = %d, %v; want 1", n, err)
	}
}

func TestRelaySurvivesABrokerDownThenUp(t *testing.T) {
	// Reserve an address, then leave it unserved: the broker is down.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()

	o := &fakeOutbox{}
	evs := events(30, "user-a", "org-b")
	o.add(evs[:20]...)
	p := newProducer(t, addr, time.Second)
	r, _ := newRelay(t, o, p, RelayOptions{Batch: 8, Interval: 50 * time.Millisecond, MaxBackoff: 200 * time.Millisecond})
	runRelay(t, r)

	eventually(t, "relay failures while the broker is down", func() bool {
		return testutil.ToFloat64(r.metrics.failures) >= 2
	})
	if unpublished, _ := o.counts(); unpublished != 20 {
		t.Fatalf("unpublished rows while the broker is down = %d, want 20", unpublished)
	}
	o.add(evs[20:]...)
	r.Notify()

	b := startBroker(t, addr)
	got := consume(t, b.Addr(), DefaultTopic, len(evs))
	eventually(t, "every row marked published", func() bool {
		unpublished, _ := o.counts()
		return unpublished == 0
	})
	// At least once: every event arrived, each key's events in order; a
	// batch that timed out while half delivered may repeat events.
	gotByKey := map[string][]string{}
	for _, rec := range got {
		gotByKey[string(rec.Key)] = append(gotByKey[string(rec.Key)], wireOf(rec).Headers["event-id"])
	}
	if diff := cmp.Diff(idsByKey(evs), dedupe(gotByKey)); diff != "" {
		t.Errorf("event ids per key, first deliveries (-want +got):\n%s", diff)
	}
}

func TestRelayCarriesOnAfterTheBrokerRestarts(t *testing.T) {
	b := startBroker(t, "127.0.0.1:0")
	addr := b.Addr()
	o := &fakeOutbox{}
	evs := events(20, "user-a", "org-b")
	o.add(evs[:10]...)
	p := newProducer(t, addr, 2*time.Second)
	r, _ := newRelay(t, o, p, RelayOptions{Batch: 4, Interval: 50 * time.Millisecond, MaxBackoff: 200 * time.Millisecond})
	runRelay(t, r)
	consume(t, addr, DefaultTopic, 10)

	// The broker restarts empty: the producer's idempotence state (its
	// producer id, its sequence numbers) is unknown to the new one.
	b.Close()
	o.add(evs[10:]...)
	eventually(t, "relay failures while the broker is down", func() bool {
		return testutil.ToFloat64(r.metrics.failures) >= 1
	})
	b2 := startBroker(t, addr)
	eventually(t, "every row marked published", func() bool {
		unpublished, _ := o.counts()
		return unpublished == 0
	})
	gotByKey := map[string][]string{}
	for _, rec := range consume(t, b2.Addr(), DefaultTopic, 10) {
		gotByKey[string(rec.Key)] = append(gotByKey[string(rec.Key)], wireOf(rec).Headers["event-id"])
	}
	if diff := cmp.Diff(idsByKey(evs[10:]), dedupe(gotByKey)); diff != "" {
		t.Errorf("event ids per key on the restarted broker (-want +got):\n%s", diff)
	}
}

// dedupe keeps the first of each id per key.
func dedupe(m map[string][]string) map[string][]string {
	out := map[string][]string{}
	for k, ids := range m {
		seen := map[string]bool{}
		for _, id := range ids {
			if !seen[id] {
				seen[id] = true
				out[k] = append(out[k], id)
			}
		}
	}
	return out
}

// flakyPublisher fails its first failFor calls, then records what it is
// given.
type flakyPublisher struct {
	mu        sync.Mutex
	failFor   int
	calls     int
	published []ledger.Event
}

func (f *flakyPublisher) Publish(_ context.Context, evs []ledger.Event) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	if f.calls <= f.failFor {
		return errors.New("broker says no")
	}
	f.published = append(f.published, evs...)
	return nil
}

func (f *flakyPublisher) snapshot() (calls int, published []ledger.Event) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls, append([]ledger.Event(nil), f.published...)
}

func TestAFailedPublishLeavesRowsUnpublished(t *testing.T) {
	o := &fakeOutbox{}
	evs := events(5, "user-a")
	o.add(evs...)
	pub := &flakyPublisher{failFor: 3}
	r, _ := newRelay(t, o, pub, RelayOptions{Batch: 10, Interval: time.Hour, MaxBackoff: 50 * time.Millisecond})

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	// One drain with a failing publisher: nothing is marked.
	if err := r.drain(ctx); err == nil {
		t.Fatal("drain with a failing publisher = nil, want an error")
	}
	if unpublished, _ := o.counts(); unpublished != 5 {
		t.Fatalf("unpublished rows after a failed publish = %d, want 5", unpublished)
	}
	// Run retries with backoff (not Interval) until the publisher recovers.
	runRelay(t, r)
	eventually(t, "rows published after the publisher recovered", func() bool {
		unpublished, _ := o.counts()
		return unpublished == 0
	})
	calls, published := pub.snapshot()
	if calls != 4 {
		t.Errorf("publish calls = %d, want 4 (3 failures, then one success)", calls)
	}
	if diff := cmp.Diff(evs, published); diff != "" {
		t.Errorf("published events (-want +got):\n%s", diff)
	}
	if n := testutil.ToFloat64(r.metrics.failures); n != 3 {
		t.Errorf("failures metric = %v, want 3", n)
	}
}

func TestNotifyWakesTheRelay(t *testing.T) {
	o := &fakeOutbox{}
	pub := &flakyPublisher{}
	r, _ := newRelay(t, o, pub, RelayOptions{Interval: time.Hour})
	runRelay(t, r)
	// Once the first Relay call (on an empty outbox) returned, the relay
	// waits its hour-long Interval unless notified.
	eventually(t, "the first drain", func() bool { return o.relayCalls.Load() >= 1 })
	o.add(events(1, "user-a")...)
	r.Notify()
	eventually(t, "the event published after Notify, long before Interval", func() bool {
		_, published := pub.snapshot()
		return len(published) == 1
	})
}

func TestRelayPrunesPublishedRowsAfterRetention(t *testing.T) {
	o := &fakeOutbox{}
	o.add(events(7, "user-a")...)
	r, _ := newRelay(t, o, &flakyPublisher{}, RelayOptions{Interval: 10 * time.Millisecond, Retention: time.Millisecond, PruneEvery: time.Millisecond})
	runRelay(t, r)
	eventually(t, "published rows pruned", func() bool {
		_, all := o.counts()
		return all == 0
	})
	o.add(events(2, "user-b")...)
	eventually(t, "rows added later published and pruned", func() bool {
		_, all := o.counts()
		return all == 0 && testutil.ToFloat64(r.metrics.pruned) == 9
	})
}
