package redisstore

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/leakytokens/leaky/ratelimit/store"
)

// Fail-closed decisions (store.WithFailClosed) carry their deadline into
// decide.lua on Redis's clock, and the script charges nothing when it runs
// at or after it. The process's deadline is translated with a lower bound
// of Redis's clock minus the process's: a TIME read sent at process time S
// and answered at E with R lies in [R−E, R−S]; the bound is the largest
// R−E of the last clockSamples fast reads (one every clockRefresh, and
// clockSamples at New), so the Redis-side deadline is never later than the
// real one, and at most one fast read's round trip earlier (a decision on
// the edge may be refused in time: a false refusal, never a phantom
// charge). A read whose round trip took longer than clockFastRTT (a busy
// machine: the reply waited for a CPU) is a poor bound, up to its round
// trip too early, which would refuse every decision of a 15 ms budget; it
// is kept only while there is no fast one. A clock step on either side is
// followed once the samples before it have aged out, within clockSamples
// fast reads.
//
// A fail-closed decision whose reply is still on its way when its caller
// gives up (executed in time, answered late: a reply held up behind a
// slow command) is not lost: its pipeline waits up to lateReplyWait past
// the deadline for the reply, and when the reply shows a charge it is
// refunded exactly (and a reservation record it opened is taken first), so
// every fail-closed decision the caller did not see admitted ends
// uncharged. Only a reply lost for good (Redis unreachable for longer)
// leaves its charge; LostLate counts those.
const (
	clockSamples  = 8
	clockRefresh  = time.Second
	clockFastRTT  = 2 * time.Millisecond
	clockAttempts = 64 // reads New makes at most to find clockSamples fast ones
	lateReplyWait = 2 * time.Second
)

// redisClock keeps the lower bound of Redis's clock minus the process's, in
// µs.
type redisClock struct {
	mu      sync.Mutex
	samples [clockSamples]int64
	n, next int
	fast    int // fast samples among them
}

// sample reads Redis TIME once and records its bound. On a cluster it
// reads every master's and records the lowest bound: a deadline translated
// with it is not later than the real one on any node.
func (k *redisClock) sample(ctx context.Context, c redis.UniversalClient) error {
	start := time.Now()
	lower, err := clockBound(ctx, c)
	if err != nil {
		return err
	}
	fast := time.Since(start) <= clockFastRTT
	k.mu.Lock()
	defer k.mu.Unlock()
	switch {
	case fast && k.fast < k.n:
		// The first fast read replaces every slow one.
		k.n, k.next, k.fast = 0, 0, 0
	case !fast && k.n > 0:
		return nil // a slow read's bound is worse than what is kept
	}
	if fast {
		k.fast = min(k.fast+1, clockSamples)
	}
	k.samples[k.next] = lower
	k.next = (k.next + 1) % clockSamples
	k.n = min(k.n+1, clockSamples)
	return nil
}

// fastSamples is how many fast reads the bound holds.
func (k *redisClock) fastSamples() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.fast
}

// clockBound is R−E of one TIME read (the lowest of every master's on a
// cluster).
func clockBound(ctx context.Context, c redis.UniversalClient) (int64, error) {
	cc, ok := c.(*redis.ClusterClient)
	if !ok {
		r, err := c.Time(ctx).Result()
		if err != nil {
			return 0, fmt.Errorf("redis time: %w", err)
		}
		return r.UnixMicro() - time.Now().UnixMicro(), nil
	}
	var (
		mu     sync.Mutex
		lowest int64
		seen   bool
	)
	err := cc.ForEachMaster(ctx, func(ctx context.Context, n *redis.Client) error {
		r, err := n.Time(ctx).Result()
		if err != nil {
			return err
		}
		b := r.UnixMicro() - time.Now().UnixMicro()
		mu.Lock()
		if !seen || b < lowest {
			lowest, seen = b, true
		}
		mu.Unlock()
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("redis time: %w", err)
	}
	return lowest, nil
}

// lower is the tightest lower bound of the recent samples; false before
// the first.
func (k *redisClock) lower() (int64, bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.n == 0 {
		return 0, false
	}
	best := k.samples[0]
	for _, v := range k.samples[1:k.n] {
		best = max(best, v)
	}
	return best, true
}

// run samples the clock every clockRefresh until quit is closed.
func (k *redisClock) run(c redis.UniversalClient, timeout time.Duration, quit <-chan struct{}) {
	t := time.NewTicker(clockRefresh)
	defer t.Stop()
	for {
		select {
		case <-quit:
			return
		case <-t.C:
			ctx, cancel := context.WithTimeout(context.Background(), timeout)
			_ = k.sample(ctx, c) // a failed read leaves the older samples
			cancel()
		}
	}
}

// deadlineArg is decide.lua's deadline argument for ctx: "" for a
// fail-open ctx, else ctx's deadline on the script's clock (Options.Now's
// when set: the time left, counted from its value now).
func (s *Store) deadlineArg(ctx context.Context) (string, error) {
	d, ok := ctx.Deadline()
	if !store.FailClosed(ctx) || !ok {
		return "", nil
	}
	if s.now != nil {
		return strconv.FormatInt(s.now()+time.Until(d).Microseconds(), 10), nil
	}
	off, ok := s.clock.lower()
	if !ok {
		return "", fmt.Errorf("redis decide: %w: no Redis clock sample yet", store.ErrLate)
	}
	return strconv.FormatInt(d.UnixMicro()+off, 10), nil
}

// LostLate is how many fail-closed decisions were abandoned by their
// caller and left charged: their reply never came, or their refund failed.
func (s *Store) LostLate() uint64 { return s.lostLate.Load() }

// lateState is a call's hand-over between its caller and the worker.
const (
	callPending   int32 = iota
	callAnswered        // the worker finished it; the caller reads it
	callAbandoned       // the caller left; the worker owns its reply
)

// abandoned settles a fail-closed call whose caller left before its reply:
// a reply that charged is refunded.
func (p *pipeliner) abandoned(c *call) {
	if !c.failClosed {
		return
	}
	if c.err != nil {
		p.s.lostLate.Add(1) // no reply: it may have run in time
		return
	}
	if len(c.vals) == 0 || c.vals[0] != 1 {
		return // refused, late (-3), held id (-2) or unseeded (-1): nothing charged
	}
	dec, at, err := decodeDecision(c.items, c.quotas, c.vals)
	if err == nil {
		err = p.s.refund(c, dec, at)
	}
	if err != nil {
		p.s.lostLate.Add(1)
	}
}

// refund undoes an admitted decision whose caller gave up: its record (if
// it opened one) is taken first, so no expiry scan charges it again.
func (s *Store) refund(c *call, dec store.Decision, at int64) error {
	ctx, cancel := context.WithTimeout(context.Background(), lateReplyWait)
	defer cancel()
	if c.reserveID != "" {
		switch _, ok, err := s.TakeReservation(ctx, c.reserveID, newNonce()); {
		case err != nil:
			return fmt.Errorf("take late reservation: %w", err)
		case !ok:
			return errors.New("take late reservation: no record")
		}
	}
	if err := s.Adjust(ctx, refunds(nil, c.items, dec.Results, at)); err != nil {
		return err
	}
	s.refunded.Add(1)
	return nil
}

// refunds appends to adj what undoes a decision made at at (µs, the
// script's time) that charged items with results: each allowed item's
// hits, its FromPurchased back to the balance, a fixed window's only while
// the window it charged lasts (a refund after it ends would take from the
// next window's count).
func refunds(adj []store.Adjustment, items []store.Item, results []store.Result, at int64) []store.Adjustment {
	for i, it := range items {
		r := results[i]
		if !r.Allowed || it.Hits <= 0 {
			continue
		}
		a := store.Adjustment{Item: it, Delta: -it.Hits, ToPurchased: r.FromPurchased}
		if it.Algorithm == store.FixedWindow && at > 0 {
			a.Window = at / it.Period * it.Period
		}
		adj = append(adj, a)
	}
	return adj
}

// newNonce is a fresh TakeReservation nonce for a take of the store's own
// (a constant one would get back an earlier take's lease of the same id).
func newNonce() string { return "own-" + rand.Text() }
