// Package kafkaevents publishes the ledger's outbox to Kafka: a Producer on
// confluent-kafka-go (librdkafka, idempotent, acks from every in-sync
// replica) that writes ledger events as Kafka messages, and a Relay that
// moves the outbox's unpublished events through any Publisher, at least
// once, and prunes what was published.
package kafkaevents

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/confluentinc/confluent-kafka-go/v2/kafka"

	"github.com/leakytokens/leaky/ratelimit/ledger"
)

// DefaultTopic is the topic events go to unless Config.Topic names another.
const DefaultTopic = "token-usage"

// The Kafka headers of every message (the spec's "Events").
const (
	HeaderEventID       = "event-id"
	HeaderEventType     = "event-type"
	HeaderSchemaVersion = "schema-version"
	HeaderOccurredAt    = "occurred-at"
)

// Config configures a Producer. The zero value of every field but Brokers
// takes the default named in its comment.
type Config struct {
	Brokers         string        // bootstrap servers, host:port[,host:port…]; required
	Topic           string        // default DefaultTopic
	ClientID        string        // default "leaky"
	DeliveryTimeout time.Duration // how long librdkafka retries one message before reporting it failed (message.timeout.ms); default 30s, at least 1ms
	QueueMessages   int           // the most messages waiting in the local queue (queue.buffering.max.messages); default 100000
	Linger          time.Duration // how long a batch waits to fill (linger.ms); default 5ms
	CloseTimeout    time.Duration // how long Close waits for queued messages; default 10s
	Logger          *slog.Logger  // librdkafka's logs and asynchronous errors; default slog.Default()
}

func (c Config) withDefaults() Config {
	if c.Topic == "" {
		c.Topic = DefaultTopic
	}
	if c.ClientID == "" {
		c.ClientID = "leaky"
	}
	if c.DeliveryTimeout == 0 {
		c.DeliveryTimeout = 30 * time.Second
	}
	if c.QueueMessages == 0 {
		c.QueueMessages = 100000
	}
	if c.Linger == 0 {
		c.Linger = 5 * time.Millisecond
	}
	if c.CloseTimeout == 0 {
		c.CloseTimeout = 10 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

func (c Config) validate() error {
	var errs []error
	if c.Brokers == "" {
		errs = append(errs, errors.New("brokers: required"))
	}
	if c.DeliveryTimeout < time.Millisecond {
		errs = append(errs, fmt.Errorf("delivery timeout %v: want at least 1ms", c.DeliveryTimeout))
	}
	if c.QueueMessages < 1 {
		errs = append(errs, fmt.Errorf("queue messages %d: want at least 1", c.QueueMessages))
	}
	if c.Linger < 0 || c.CloseTimeout < 0 {
		errs = append(errs, errors.New("linger and close timeout: want ≥ 0"))
	}
	return errors.Join(errs...)
}

// configMap is the librdkafka configuration: an idempotent producer (no
// duplicates from its own retries, order kept per partition), acks from
// every in-sync replica, murmur2 partitioning of the key as the Java
// client and franz-go do (a key's events land on the same partition
// whoever produces them), and delivery reports without copies of the
// messages.
func (c Config) configMap() *kafka.ConfigMap {
	return &kafka.ConfigMap{
		"bootstrap.servers":                     c.Brokers,
		"client.id":                             c.ClientID,
		"enable.idempotence":                    true,
		"acks":                                  "all",
		"max.in.flight.requests.per.connection": 5,
		"message.timeout.ms":                    int(c.DeliveryTimeout.Milliseconds()),
		"queue.buffering.max.messages":          c.QueueMessages,
		"linger.ms":                             int(c.Linger.Milliseconds()),
		"partitioner":                           "murmur2_random",
		"go.delivery.report.fields":             "none",
		"go.logs.channel.enable":                true,
	}
}

// Producer writes ledger events to one Kafka topic. It is safe for
// concurrent use; Close it once done.
type Producer struct {
	cfg  Config
	kp   *kafka.Producer
	done sync.WaitGroup // the goroutine draining librdkafka's events and logs
	once sync.Once
}

// NewProducer validates cfg and creates the producer. It does not wait for
// the brokers: a broker that is down fails the deliveries, not this call.
func NewProducer(cfg Config) (*Producer, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("kafka producer config: %w", err)
	}
	kp, err := kafka.NewProducer(cfg.configMap())
	if err != nil {
		return nil, fmt.Errorf("kafka producer: %w", err)
	}
	p := &Producer{cfg: cfg, kp: kp}
	p.done.Add(1)
	go p.drain()
	return p, nil
}

// drain logs librdkafka's asynchronous errors and its logs until Close
// closes both channels. Delivery reports do not come here: each Publish
// has its own channel.
func (p *Producer) drain() {
	defer p.done.Done()
	events, logs := p.kp.Events(), p.kp.Logs()
	for events != nil || logs != nil {
		select {
		case ev, ok := <-events:
			if !ok {
				events = nil
				continue
			}
			if err, isErr := ev.(kafka.Error); isErr {
				p.cfg.Logger.Warn("kafka producer error", "err", err, "fatal", err.IsFatal())
			}
		case l, ok := <-logs:
			if !ok {
				logs = nil
				continue
			}
			p.cfg.Logger.Log(context.Background(), syslogLevel(l.Level), "librdkafka",
				"tag", l.Tag, "msg", l.Message)
		}
	}
}

// syslogLevel maps librdkafka's syslog levels onto slog's. Its notices
// and informational lines (5, 6: telemetry ids, reconnections that
// succeed) are debug here: they say nothing an operator acts on.
func syslogLevel(l int) slog.Level {
	switch {
	case l <= 3:
		return slog.LevelError
	case l == 4:
		return slog.LevelWarn
	default:
		return slog.LevelDebug
	}
}

// Message is the Kafka message of ev on topic: its key, its payload as the
// value and the headers event-id, event-type, schema-version and
// occurred-at (RFC 3339 with nanoseconds, UTC).
func Message(topic string, ev ledger.Event) *kafka.Message {
	return &kafka.Message{
		TopicPartition: kafka.TopicPartition{Topic: &topic, Partition: kafka.PartitionAny},
		Key:            []byte(ev.Key),
		Value:          ev.Payload,
		Headers: []kafka.Header{
			{Key: HeaderEventID, Value: []byte(ev.ID)},
			{Key: HeaderEventType, Value: []byte(ev.Type)},
			{Key: HeaderSchemaVersion, Value: []byte(strconv.Itoa(ev.Schema))},
			{Key: HeaderOccurredAt, Value: []byte(ev.OccurredAt.UTC().Format(time.RFC3339Nano))},
		},
	}
}

// Publish produces events in order, stopping at the first the local queue
// refuses, and waits for every delivery report. It
// returns nil only when every event was acknowledged; otherwise an error
// naming how many of them failed (their retries within DeliveryTimeout
// exhausted, or the local queue full), or ctx's error when ctx ends first.
// Events of a failed call may still have been written: publishing them
// again is at least once, and consumers deduplicate on event-id.
func (p *Producer) Publish(ctx context.Context, events []ledger.Event) error {
	if len(events) == 0 {
		return nil
	}
	// Buffered for every report, so librdkafka's poller never blocks on a
	// call that stopped waiting.
	reports := make(chan kafka.Event, len(events))
	var failed, pending int
	var first error
	for i, ev := range events {
		if err := p.kp.Produce(Message(p.cfg.Topic, ev), reports); err != nil {
			// Stop at the first refusal (the local queue full): producing
			// the events after it could put a later event of its key
			// before it on the topic. The whole call fails, and the relay
			// publishes the batch again, in order.
			failed += len(events) - i
			first = err
			break
		}
		pending++
	}
	for ; pending > 0; pending-- {
		select {
		case <-ctx.Done():
			return fmt.Errorf("publish %d events: %w", len(events), ctx.Err())
		case e := <-reports:
			m, ok := e.(*kafka.Message)
			switch {
			case !ok:
				failed++
				first = cmp.Or(first, fmt.Errorf("unexpected delivery event %v", e))
			case m.TopicPartition.Error != nil:
				failed++
				first = cmp.Or(first, m.TopicPartition.Error)
			}
		}
	}
	if failed > 0 {
		return fmt.Errorf("publish: %d of %d events failed: %w", failed, len(events), first)
	}
	return nil
}

// Close waits up to CloseTimeout for the queued messages, drops those still
// queued after it (their Publish calls report them failed) and closes the
// producer. Call it after the last Publish returned; it is safe to call
// more than once.
func (p *Producer) Close() {
	p.once.Do(func() {
		if left := p.kp.Flush(int(p.cfg.CloseTimeout.Milliseconds())); left > 0 {
			p.cfg.Logger.Warn("kafka producer closed with messages undelivered", "messages", left)
			if err := p.kp.Purge(kafka.PurgeQueue | kafka.PurgeInFlight); err != nil {
				p.cfg.Logger.Warn("kafka producer purge", "err", err)
			}
		}
		p.kp.Close()
		p.done.Wait()
	})
}
