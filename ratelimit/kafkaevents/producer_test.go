package kafkaevents

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/leakytokens/leaky/ratelimit/ledger"
)

// wire is what a consumer sees of one message.
type wire struct {
	Key     string
	Value   string
	Headers map[string]string
}

func wireOf(r *kgo.Record) wire {
	h := make(map[string]string, len(r.Headers))
	for _, kv := range r.Headers {
		h[kv.Key] = string(kv.Value)
	}
	return wire{Key: string(r.Key), Value: string(r.Value), Headers: h}
}

// wantWire is what the spec says a consumer sees of ev.
func wantWire(ev ledger.Event) wire {
	return wire{Key: ev.Key, Value: string(ev.Payload), Headers: map[string]string{
		"event-id":       ev.ID,
		"event-type":     ev.Type,
		"schema-version": "1",
		"occurred-at":    ev.OccurredAt.UTC().Format(time.RFC3339Nano),
	}}
}

func TestPublishWritesKeyHeadersAndPayload(t *testing.T) {
	b := startBroker(t, "127.0.0.1:0")
	p := newProducer(t, b.Addr(), 30*time.Second)
	evs := events(2, "org-1")
	evs[1].Type = ledger.TypePurchase
	evs[1].OccurredAt = time.Date(2026, 10, 25, 3, 0, 0, 0, time.FixedZone("CEST", 2*3600))

	if err := p.Publish(t.Context(), evs); err != nil {
		t.Fatalf("Publish: %v", err)
	}
	got := consume(t, b.Addr(), DefaultTopic, 2)
	want := []wire{wantWire(evs[0]), wantWire(evs[1])}
	if diff := cmp.Diff(want, []wire{wireOf(got[0]), wireOf(got[1])}); diff != "" {
		t.Errorf("consumed messages (-want +got):\n%s", diff)
	}
	if h := wireOf(got[1]).Headers["occurred-at"]; h != "2026-10-25T01:00:00Z" {
		t.Errorf("occurred-at of a CEST time = %q, want it in UTC: 2026-10-25T01:00:00Z", h)
	}
}

func TestPublishKeepsEachKeysOrder(t *testing.T) {
	b := startBroker(t, "127.0.0.1:0")
	p := newProducer(t, b.Addr(), 30*time.Second)
	keys := []string{"user-a", "user-b", "org-c", "user-d", "org-e"}
	evs := events(500, keys...)
	for start := 0; start < len(evs); start += 50 {
		if err := p.Publish(t.Context(), evs[start:start+50]); err != nil {
			t.Fatalf("Publish batch at %d: %v", start, err)
		}
	}
	got := consume(t, b.Addr(), DefaultTopic, len(evs))

	want := map[string][]string{}
	for _, ev := range evs {
		want[ev.Key] = append(want[ev.Key], ev.ID)
	}
	gotByKey := map[string][]string{}
	partitionOf := map[string]int32{}
	for _, r := range got {
		k := string(r.Key)
		gotByKey[k] = append(gotByKey[k], wireOf(r).Headers["event-id"])
		if p, ok := partitionOf[k]; ok && p != r.Partition {
			t.Errorf("key %s on partitions %d and %d, want one", k, p, r.Partition)
		}
		partitionOf[k] = r.Partition
	}
	if diff := cmp.Diff(want, gotByKey); diff != "" {
		t.Errorf("event ids per key, in consumed order (-want +got):\n%s", diff)
	}
}

func TestPublishReportsFailedDeliveries(t *testing.T) {
	// A port nobody listens on: every delivery times out.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	p := newProducer(t, addr, time.Second)

	err = p.Publish(t.Context(), events(3, "user-a"))
	if err == nil || !strings.Contains(err.Error(), "3 of 3 events failed") {
		t.Fatalf("Publish to a broker that is down = %v, want an error naming 3 of 3 events failed", err)
	}
}

func TestPublishReturnsWhenContextEnds(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	p := newProducer(t, addr, time.Hour)

	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	if err := p.Publish(ctx, events(2, "user-a")); err == nil || ctx.Err() == nil {
		t.Fatalf("Publish with an ended context = %v, want the context's error", err)
	}
}

func TestNewProducerRejectsBadConfig(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		want string
	}{
		{"no brokers", Config{}, "brokers: required"},
		{"negative delivery timeout", Config{Brokers: "127.0.0.1:1", DeliveryTimeout: -time.Second}, "delivery timeout"},
		{"negative queue", Config{Brokers: "127.0.0.1:1", QueueMessages: -1}, "queue messages"},
		{"negative linger", Config{Brokers: "127.0.0.1:1", Linger: -time.Millisecond}, "linger"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p, err := NewProducer(tc.cfg)
			if err == nil {
				p.Close()
				t.Fatalf("NewProducer(%+v) = nil error, want one naming %q", tc.cfg, tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("NewProducer(%+v) = %v, want an error naming %q", tc.cfg, err, tc.want)
			}
		})
	}
}
