// Package consul is the control plane's adapter to HashiCorp Consul: it
// watches the catalog's healthy instances of named services and one KV key
// (the policy) with blocking queries, writes that key with check-and-set, and
// registers a service with an HTTP health check.
//
// The watchers follow Consul's blocking-query rules: each query waits on the
// index of the previous answer; an index that goes backwards (a restarted or
// replaced agent, a snapshot restore) starts over at 0, an index of 0 is
// taken as 1 so that the next query blocks, and an error is reported and
// retried after an exponential, jittered backoff (100 ms doubling to 10 s).
// After an error the next query does not block, since the agent answering
// may no longer be the one whose index the watcher held.
package consul

import (
	"context"
	"math/rand/v2"
	"time"

	"github.com/hashicorp/consul/api"
)

const (
	// waitTime bounds one blocking query; Consul adds up to 1/16 of it.
	waitTime = time.Minute
	// requestTimeout ends a query whose agent stopped answering without
	// closing the connection.
	requestTimeout = waitTime + waitTime/16 + 15*time.Second
	// The backoff after an error: the first delay's ceiling and the cap.
	backoffBase = 100 * time.Millisecond
	backoffMax  = 10 * time.Second
)

// nextIndex is the wait index for the query after an answer carrying index
// got, when the query waited on prev. An index of 0 is treated as 1 (waiting
// on 0 does not block); an index below prev means the agent's state was
// reset, so the next query starts over at 0 and answers at once.
func nextIndex(prev, got uint64) uint64 {
	got = max(got, 1)
	if got < prev {
		return 0
	}
	return got
}

// backoff is the delay before the next attempt after failures consecutive
// errors (1 for the first): a ceiling of backoffBase doubling with each
// failure up to backoffMax, jittered uniformly over its upper half.
func backoff(failures int) time.Duration {
	ceiling := backoffMax
	if failures < 20 {
		ceiling = min(backoffBase<<(failures-1), backoffMax)
	}
	return ceiling/2 + rand.N(ceiling/2+1)
}

// poll runs query after query until ctx ends. query is called with the
// options of one blocking query and returns the index of its answer; it
// handles the answer itself. An error goes to fail (never once ctx has
// ended), then the loop waits out the backoff and starts over at index 0.
func poll(ctx context.Context, query func(*api.QueryOptions) (uint64, error), fail func(error)) {
	var index uint64
	failures := 0
	for ctx.Err() == nil {
		qctx, cancel := context.WithTimeout(ctx, requestTimeout)
		got, err := query((&api.QueryOptions{WaitIndex: index, WaitTime: waitTime}).WithContext(qctx))
		cancel()
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			failures = 0
			index = nextIndex(index, got)
			continue
		}
		fail(err)
		failures++
		index = 0
		t := time.NewTimer(backoff(failures))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}
