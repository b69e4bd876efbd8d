package kafkadev

import (
	"context"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// metadata asks the broker at addr for topics' metadata, creating missing
// ones when autoCreate.
func metadata(t *testing.T, addr string, autoCreate bool, topics ...string) *kmsg.MetadataResponse {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr))
	if err != nil {
		t.Fatalf("kgo.NewClient: %v", err)
	}
	defer cl.Close()
	req := kmsg.NewPtrMetadataRequest()
	req.AllowAutoTopicCreation = autoCreate
	for _, name := range topics {
		rt := kmsg.NewMetadataRequestTopic()
		rt.Topic = kmsg.StringPtr(name)
		req.Topics = append(req.Topics, rt)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	resp, err := req.RequestWith(ctx, cl)
	if err != nil {
		t.Fatalf("metadata request: %v", err)
	}
	return resp
}

func TestStartSeedsTopicsAndAdvertisesItsAddress(t *testing.T) {
	b, err := Start(t.Context(), "127.0.0.1:0", "token-usage")
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	defer b.Close()

	resp := metadata(t, b.Addr(), false, "token-usage")
	if len(resp.Brokers) != 1 {
		t.Fatalf("brokers = %d, want 1", len(resp.Brokers))
	}
	got := net.JoinHostPort(resp.Brokers[0].Host, strconv.Itoa(int(resp.Brokers[0].Port)))
	if got != b.Addr() {
		t.Errorf("advertised broker = %s, want %s", got, b.Addr())
	}
	if len(resp.Topics) != 1 || resp.Topics[0].ErrorCode != 0 {
		t.Fatalf("metadata topics = %+v, want token-usage without error", resp.Topics)
	}
	if n := len(resp.Topics[0].Partitions); n != Partitions {
		t.Errorf("token-usage partitions = %d, want %d", n, Partitions)
	}
}

func TestUnspecifiedHostIsAdvertisedAsLoopback(t *testing.T) {
	b, err := Start(t.Context(), "0.0.0.0:0")
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	defer b.Close()
	host, _, err := net.SplitHostPort(b.Addr())
	if err != nil || host != "127.0.0.1" {
		t.Fatalf("Addr() = %q, want 127.0.0.1:port", b.Addr())
	}
	resp := metadata(t, b.Addr(), false)
	if len(resp.Brokers) != 1 || resp.Brokers[0].Host != "127.0.0.1" {
		t.Errorf("advertised brokers = %+v, want one on 127.0.0.1", resp.Brokers)
	}
}

func TestProduceAndConsumeAutoCreatedTopic(t *testing.T) {
	b, err := Start(t.Context(), "127.0.0.1:0")
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	defer b.Close()

	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	prod, err := kgo.NewClient(kgo.SeedBrokers(b.Addr()), kgo.AllowAutoTopicCreation())
	if err != nil {
		t.Fatalf("kgo.NewClient: %v", err)
	}
	defer prod.Close()
	want := []string{"a", "b", "c"}
	for _, v := range want {
		r := &kgo.Record{Topic: "made-on-demand", Key: []byte("k"), Value: []byte(v)}
		if err := prod.ProduceSync(ctx, r).FirstErr(); err != nil {
			t.Fatalf("produce %s: %v", v, err)
		}
	}

	cons, err := kgo.NewClient(kgo.SeedBrokers(b.Addr()), kgo.ConsumeTopics("made-on-demand"),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatalf("kgo.NewClient: %v", err)
	}
	defer cons.Close()
	var got []string
	for len(got) < len(want) {
		fs := cons.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			t.Fatalf("consumed %v before the deadline, want %v", got, want)
		}
		fs.EachRecord(func(r *kgo.Record) { got = append(got, string(r.Value)) })
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("consumed records (-want +got):\n%s", diff)
	}
	if n := len(metadata(t, b.Addr(), false, "made-on-demand").Topics[0].Partitions); n != Partitions {
		t.Errorf("auto-created partitions = %d, want %d", n, Partitions)
	}
}

func TestContextEndStopsTheBroker(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	b, err := Start(ctx, "127.0.0.1:0")
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	defer b.Close()
	cancel()
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", b.Addr(), time.Second)
		if err != nil {
			break
		}
		c.Close()
		if time.Now().After(deadline) {
			t.Fatal("broker still accepts connections 30s after its context ended")
		}
		time.Sleep(50 * time.Millisecond)
	}
	// The port is free again: a new broker can take it.
	b2, err := Start(t.Context(), b.Addr())
	if err != nil {
		t.Fatalf("Start on the stopped broker's address: %v", err)
	}
	b2.Close()
	b2.Close()
}
