package kafkaevents

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/leakytokens/leaky/ratelimit/ledger"
)

// kcatMessage is one line of `kcat -J`: the message's JSON envelope, its
// headers a flat list of name, value, name, value….
type kcatMessage struct {
	Topic   string   `json:"topic"`
	Key     string   `json:"key"`
	Payload string   `json:"payload"`
	Headers []string `json:"headers"`
}

// TestKcatReadsTheEvents reads the topic with Debian's kcat, an independent
// client (librdkafka built by Debian, not the one confluent-kafka-go
// bundles), as a user watching `leaky dev` would.
func TestKcatReadsTheEvents(t *testing.T) {
	kcat, err := exec.LookPath("kcat")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("kcat is required in CI and unavailable: %v (scripts/deps.sh installs Debian's kcat)", err)
		}
		t.Skipf("kcat unavailable: %v (scripts/deps.sh installs Debian's kcat)", err)
	}
	b := startBroker(t, "127.0.0.1:0")
	p := newProducer(t, b.Addr(), 30*time.Second)
	evs := events(3, "org-7", "user-9")
	evs[2].Type = ledger.TypeReservationSettled
	if err := p.Publish(t.Context(), evs); err != nil {
		t.Fatalf("Publish: %v", err)
	}

	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, kcat, "-b", b.Addr(), "-C", "-t", DefaultTopic, "-o", "beginning", "-e", "-J", "-q")
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("kcat: %v\nstderr:\n%s", err, stderr.String())
	}

	got := map[string]kcatMessage{} // by event-id
	sc := bufio.NewScanner(&stdout)
	for sc.Scan() {
		var m kcatMessage
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("kcat line %q: %v", sc.Text(), err)
		}
		got[header(m.Headers, HeaderEventID)] = m
	}
	want := map[string]kcatMessage{}
	for _, ev := range evs {
		want[ev.ID] = kcatMessage{
			Topic:   DefaultTopic,
			Key:     ev.Key,
			Payload: string(ev.Payload),
			Headers: []string{
				"event-id", ev.ID,
				"event-type", ev.Type,
				"schema-version", "1",
				"occurred-at", ev.OccurredAt.UTC().Format(time.RFC3339Nano),
			},
		}
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("messages kcat read, by event-id (-want +got):\n%s\nkcat's output:\n%s", diff, stdout.String())
	}
}

// header returns the value of name in kcat's flat header list.
func header(kv []string, name string) string {
	for i := 0; i+1 < len(kv); i += 2 {
		if kv[i] == name {
			return kv[i+1]
		}
	}
	return ""
}
