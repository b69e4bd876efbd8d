// Package kafkadev runs an embedded, in-memory Kafka-protocol broker
// (twmb/franz-go's kfake) for `leaky dev` and for tests, so the service's
// real Kafka client (confluent-kafka-go, librdkafka) and a user's tools
// (kcat) talk to it as to a Kafka cluster of one broker. Nothing is kept on
// disk: the topics' records live until Close.
package kafkadev

import (
	"context"
	"fmt"
	"net"
	"strconv"

	"github.com/twmb/franz-go/pkg/kfake"
)

// Partitions is the number of partitions of every topic the broker creates:
// the topics named to Start and those a client creates by asking for them.
const Partitions = 3

// Broker is a running embedded broker. Its methods are safe for concurrent
// use.
type Broker struct {
	cluster *kfake.Cluster
	addr    string
	stop    func() bool
}

// Start listens on addr (host:port; port 0 picks a free one) and serves one
// broker whose advertised address, the one metadata responses name, is the
// bound address (an unspecified host, such as 0.0.0.0 or [::], is advertised
// as 127.0.0.1). topics are created at once with Partitions partitions; any
// other topic is created when a producer or consumer first asks for it. The
// broker stops when ctx ends or Close is called, whichever is first.
func Start(ctx context.Context, addr string, topics ...string) (*Broker, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("kafka broker: listen on %s: %w", addr, err)
	}
	adv := advertised(ln.Addr())
	used := false
	listen := func(string, string) (net.Listener, error) {
		if used {
			return nil, fmt.Errorf("kafka broker: more than one listener asked of %s", addr)
		}
		used = true
		return advertisedListener{Listener: ln, addr: adv}, nil
	}
	opts := []kfake.Opt{
		kfake.NumBrokers(1),
		kfake.ListenFn(listen),
		kfake.AllowAutoTopicCreation(),
		kfake.DefaultNumPartitions(Partitions),
		kfake.ClusterID("leaky-dev"),
	}
	if len(topics) > 0 {
		opts = append(opts, kfake.SeedTopics(Partitions, topics...))
	}
	c, err := kfake.NewCluster(opts...)
	if err != nil {
		ln.Close()
		return nil, fmt.Errorf("kafka broker: %w", err)
	}
	b := &Broker{cluster: c, addr: adv.String()}
	b.stop = context.AfterFunc(ctx, c.Close)
	return b, nil
}

// Addr is the broker's host:port, what a client's bootstrap servers name.
func (b *Broker) Addr() string { return b.addr }

// Close stops the broker, closes every client's connection and drops every
// record. It is safe to call more than once.
func (b *Broker) Close() {
	b.stop()
	b.cluster.Close()
}

// advertised is the address clients are told to dial for a listener bound to
// a: a itself unless its host is unspecified, then the loopback address.
func advertised(a net.Addr) *net.TCPAddr {
	tcp, ok := a.(*net.TCPAddr)
	if !ok {
		host, port, _ := net.SplitHostPort(a.String())
		p, _ := strconv.Atoi(port)
		return &net.TCPAddr{IP: net.ParseIP(host), Port: p}
	}
	if tcp.IP == nil || tcp.IP.IsUnspecified() {
		return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: tcp.Port}
	}
	return tcp
}

// advertisedListener reports addr as its address: kfake advertises its
// listener's address in metadata, and a bound 0.0.0.0 is not dialable.
type advertisedListener struct {
	net.Listener
	addr net.Addr
}

func (l advertisedListener) Addr() net.Addr { return l.addr }
