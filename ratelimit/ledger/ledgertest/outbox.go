package ledgertest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/leakytokens/leaky/ratelimit/ledger"
)

// records writes n usages of users u0…u(keys-1) in turn and returns their
// events in the order written.
func records(t *testing.T, l ledger.Ledger, prefix string, n, keys int) []ledger.Event {
	t.Helper()
	var out []ledger.Event
	for i := range n {
		out = append(out, record(t, l, Usage(fmt.Sprintf("%s-%d", prefix, i), fmt.Sprintf("u%d", i%keys), "", W1, 1, 0)))
	}
	return out
}

// testRelayError: when publish fails nothing is marked, and the next relay
// publishes the same events.
func testRelayError(t *testing.T, l ledger.Ledger) {
	written := records(t, l, "r", 3, 3)
	var seen []ledger.Event
	boom := errors.New("broker down")
	n, err := l.Relay(Ctx(t), 10, func(_ context.Context, evs []ledger.Event) error {
		seen = append(seen, evs...)
		return boom
	})
	if n != 0 || !errors.Is(err, boom) {
		t.Errorf("Relay(failing publish) = %d, %v, want 0, %v", n, err, boom)
	}
	if diff := cmp.Diff(ids(written), ids(seen)); diff != "" {
		t.Errorf("events offered (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(ids(written), ids(drain(t, l))); diff != "" {
		t.Errorf("events published after the failure (-want +got):\n%s", diff)
	}
}

// testRelayCtx: a relay whose context ends while it publishes (a relay
// killed after sending, before marking) marks nothing; the next relay
// publishes the events again: at least once.
func testRelayCtx(t *testing.T, l ledger.Ledger) {
	written := records(t, l, "r", 4, 2)
	ctx, cancel := context.WithCancel(Ctx(t))
	var sent []ledger.Event
	_, err := l.Relay(ctx, 10, func(_ context.Context, evs []ledger.Event) error {
		sent = append(sent, evs...)
		cancel()
		return nil
	})
	if err == nil {
		t.Error("Relay(context ended while publishing) = nil error, want one")
	}
	if diff := cmp.Diff(ids(written), ids(sent)); diff != "" {
		t.Errorf("events sent (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(ids(written), ids(drain(t, l))); diff != "" {
		t.Errorf("events published by the next relay (-want +got):\n%s", diff)
	}
}

// testRelayOrder: oldest first, n at most per call, published events are
// not offered again, and the events carry what was written.
func testRelayOrder(t *testing.T, l ledger.Ledger) {
	written := records(t, l, "r", 5, 5)
	var got []ledger.Event
	for i, want := range []int{2, 2, 1, 0} {
		n, err := l.Relay(Ctx(t), 2, func(_ context.Context, evs []ledger.Event) error {
			got = append(got, evs...)
			return nil
		})
		if err != nil || n != want {
			t.Errorf("Relay() #%d = %d, %v, want %d, nil", i, n, err, want)
		}
	}
	if diff := cmp.Diff(written, got, samePayload); diff != "" {
		t.Errorf("published (-want +got):\n%s", diff)
	}
}

// testPrune: events published before the moment are deleted, unpublished
// ones never.
func testPrune(t *testing.T, l ledger.Ledger) {
	records(t, l, "a", 3, 1)
	if n, err := l.Prune(Ctx(t), time.Now().Add(time.Hour)); err != nil || n != 0 {
		t.Errorf("Prune(nothing published) = %d, %v, want 0", n, err)
	}
	drain(t, l)
	unpublished := records(t, l, "b", 2, 1)
	if n, err := l.Prune(Ctx(t), time.Now().Add(-time.Hour)); err != nil || n != 0 {
		t.Errorf("Prune(an hour ago) = %d, %v, want 0", n, err)
	}
	if n, err := l.Prune(Ctx(t), time.Now().Add(time.Hour)); err != nil || n != 3 {
		t.Errorf("Prune(in an hour) = %d, %v, want 3", n, err)
	}
	if diff := cmp.Diff(ids(unpublished), ids(drain(t, l))); diff != "" {
		t.Errorf("published after the prune (-want +got):\n%s", diff)
	}
}

// testConcurrentRelays: many relays at once publish every event exactly
// once while they all run, and each key's events in the order written.
func testConcurrentRelays(t *testing.T, l ledger.Ledger) {
	written := records(t, l, "r", 240, 12)
	pub := relayAll(t, l, 8, 5, len(written), nil)
	if len(pub) != len(written) {
		t.Errorf("published %d events, want %d", len(pub), len(written))
	}
	count := map[string]int{}
	for _, e := range pub {
		count[e.ID]++
	}
	for _, e := range written {
		if count[e.ID] != 1 {
			t.Errorf("event %s published %d times, want 1", e.ID, count[e.ID])
		}
	}
	perKey := func(evs []ledger.Event) map[string][]string {
		m := map[string][]string{}
		for _, e := range evs {
			m[e.Key] = append(m[e.Key], e.ID)
		}
		return m
	}
	if diff := cmp.Diff(perKey(written), perKey(pub)); diff != "" {
		t.Errorf("events per key in publication order (-want +got):\n%s", diff)
	}
}

// relayAll runs relays goroutines relaying batches of n until want events
// were published (or a bound of time passed) and returns them in the order
// their publish calls returned. check, when set, runs inside publish.
func relayAll(t *testing.T, l ledger.Ledger, relays, n, want int, check func(context.Context, []ledger.Event) error) []ledger.Event {
	t.Helper()
	var mu = make(chan struct{}, 1)
	var pub []ledger.Event
	deadline := time.Now().Add(90 * time.Second)
	errs := make(chan error, relays)
	for range relays {
		go func() {
			for time.Now().Before(deadline) {
				mu <- struct{}{}
				done := len(pub) >= want
				<-mu
				if done {
					errs <- nil
					return
				}
				_, err := l.Relay(Ctx(t), n, func(ctx context.Context, evs []ledger.Event) error {
					if check != nil {
						if err := check(ctx, evs); err != nil {
							return err
						}
					}
					// Give other relays time to claim what this one holds.
					time.Sleep(time.Millisecond)
					mu <- struct{}{}
					pub = append(pub, evs...)
					<-mu
					return nil
				})
				if err != nil {
					errs <- err
					return
				}
			}
			errs <- errors.New("relays did not publish every event within 90 s")
		}()
	}
	for range relays {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	return slices.Clone(pub)
}
