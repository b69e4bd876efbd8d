package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	"golang.org/x/sync/errgroup"

	"github.com/leakytokens/leaky/ratelimit"
	"github.com/leakytokens/leaky/ratelimit/kafkaevents"
	"github.com/leakytokens/leaky/ratelimit/ledger"
	"github.com/leakytokens/leaky/ratelimit/pgledger"
)

// record is the token service's durable record (the ledger, PostgreSQL or
// memory) and the relay that publishes its outbox to Kafka: adapters, so
// chosen here, beside the bucket store.
type record struct {
	ledger   ledger.Ledger
	closeDB  func()
	producer *kafkaevents.Producer // nil without brokers
	relay    *kafkaevents.Relay    // nil without brokers and with a PostgreSQL ledger
	closed   sync.Once
}

// openRecord opens the ledger cfg names (PostgreSQL at cfg.DatabaseURL, the
// memory ledger without one) and, with cfg.KafkaBrokers, the producer and
// the relay publishing the outbox. Without brokers a PostgreSQL ledger
// keeps its events until a relay with brokers runs; the memory ledger's
// relay drops them (nothing could read them later). The relay's metrics go
// to the service's registry.
func openRecord(ctx context.Context, cfg ratelimit.Config, svc *ratelimit.Service, logger *slog.Logger) (*record, error) {
	r := &record{closeDB: func() {}}
	if cfg.DatabaseURL == "" {
		r.ledger = ledger.NewMemory(ledger.MemoryOptions{})
	} else {
		octx, cancel := context.WithTimeout(ctx, openTimeout)
		defer cancel()
		pl, err := pgledger.Open(octx, cfg.DatabaseURL, pgledger.Options{Schema: cfg.LedgerSchema})
		if err != nil {
			return nil, fmt.Errorf("ledger: %w", err)
		}
		r.ledger, r.closeDB = pl, pl.Close
	}
	var pub kafkaevents.Publisher
	switch {
	case cfg.KafkaBrokers != "":
		p, err := kafkaevents.NewProducer(kafkaevents.Config{Brokers: cfg.KafkaBrokers, Topic: cfg.KafkaTopic, Logger: logger})
		if err != nil {
			r.close()
			return nil, fmt.Errorf("kafka producer: %w", err)
		}
		r.producer, pub = p, p
	case cfg.DatabaseURL == "":
		pub = discard{}
	default:
		logger.Warn("no Kafka brokers (-kafka-brokers, KAFKA_BROKERS): events stay in the ledger's outbox until a relay with brokers runs")
		return r, nil
	}
	relay, err := kafkaevents.NewRelay(r.ledger, pub, kafkaevents.RelayOptions{
		Interval: cfg.OutboxInterval, Retention: cfg.OutboxRetention, Logger: logger, Registerer: svc.Registerer(),
	})
	if err != nil {
		r.close()
		return nil, err
	}
	r.relay = relay
	r.ledger = notifying{Ledger: r.ledger, notify: relay.Notify}
	return r, nil
}

// run serves svc with the record until ctx ends: the relay stops after the
// service (whose last settlements it may still publish), then the producer
// flushes and the ledger closes.
func (r *record) run(ctx context.Context, svc *ratelimit.Service) error {
	defer r.close()
	if r.relay == nil {
		return svc.Run(ctx)
	}
	relayCtx, stopRelay := context.WithCancel(context.WithoutCancel(ctx))
	g := new(errgroup.Group)
	g.Go(func() error { return r.relay.Run(relayCtx) })
	err := svc.Run(ctx)
	stopRelay()
	return errors.Join(err, g.Wait())
}

// close flushes the producer and closes the ledger, once; later calls do
// nothing.
func (r *record) close() {
	r.closed.Do(func() {
		if r.producer != nil {
			r.producer.Close()
		}
		r.closeDB()
	})
}

// notifying wakes the relay after every write that committed events, so
// they leave at once instead of at the relay's next interval.
type notifying struct {
	ledger.Ledger
	notify func()
}

func (n notifying) RecordUsage(ctx context.Context, u ledger.Usage, ev ledger.Event) (bool, error) {
	ok, err := n.Ledger.RecordUsage(ctx, u, ev)
	if ok && err == nil {
		n.notify()
	}
	return ok, err
}

func (n notifying) StartSaga(ctx context.Context, s ledger.Saga, ev ledger.Event) (ledger.Saga, bool, error) {
	saga, created, err := n.Ledger.StartSaga(ctx, s, ev)
	if created && err == nil {
		n.notify()
	}
	return saga, created, err
}

func (n notifying) StepSaga(ctx context.Context, id string, from, to ledger.Status, reason string, evs ...ledger.Event) (ledger.Saga, error) {
	saga, err := n.Ledger.StepSaga(ctx, id, from, to, reason, evs...)
	if err == nil {
		n.notify()
	}
	return saga, err
}

// discard is the memory ledger's publisher without Kafka: relayed events
// are dropped, so the outbox stays bounded.
type discard struct{}

func (discard) Publish(context.Context, []ledger.Event) error { return nil }
