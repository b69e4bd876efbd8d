package redisstore

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/leakytokens/leaky/ratelimit/store"
)

// Implicit pipelining: concurrent decisions are queued and a few workers
// each send whatever is queued as one pipeline of EVALSHA commands, so a
// busy service pays one network round trip and a couple of system calls per
// batch instead of per decision. Each command is still its own script run,
// atomic on its own.
//
// A call whose caller has given up (its context is done) before its batch
// is sent is dropped, never sent: the caller has already answered without
// it, so charging it later would charge a request that was not admitted. A
// batch's deadline is the earliest of its fail-open callers'; with
// fail-closed calls in it, it also waits up to lateReplyWait past their
// deadlines, so the reply of one whose caller left is read and its charge,
// if any, refunded (late.go). When Redis has lost the
// script (NOSCRIPT, after a restart or SCRIPT FLUSH), the worker loads it
// once and sends the failed calls again.
const (
	pipelineWorkers = 4  // batches in flight at once
	maxBatch        = 64 // commands in one pipeline
)

// call is one queued script run. The worker sets vals or err, then closes
// done.
type call struct {
	ctx  context.Context
	keys []string
	args []any
	vals []int64
	err  error
	done chan struct{}

	state      atomic.Int32 // callPending, callAnswered or callAbandoned
	failClosed bool         // store.FailClosed(ctx)
	items      []store.Item // what a refund of an abandoned call undoes
	quotas     int          // quota items among items
	reserveID  string       // the record an abandoned call opened, "" for none
}

type pipeliner struct {
	s    *Store
	in   chan *call
	quit chan struct{}
	wg   sync.WaitGroup
	// refunds are the abandoned calls being settled (late.go), each on
	// its own goroutine so that no worker waits for one.
	refunds sync.WaitGroup
}

func newPipeliner(s *Store) *pipeliner {
	p := &pipeliner{s: s, in: make(chan *call, 4*maxBatch), quit: make(chan struct{})}
	for range pipelineWorkers {
		p.wg.Add(1)
		go p.work()
	}
	if s.now == nil {
		p.wg.Go(func() { s.clock.run(s.c, max(s.timeout, 100*time.Millisecond), p.quit) })
	}
	return p
}

// stop ends the workers and waits for them. Queued calls fail.
func (p *pipeliner) stop() {
	close(p.quit)
	p.wg.Wait()
	p.refunds.Wait()
}

// do queues the decision c (keys, args and the refund fields set) and
// waits for it or for its ctx. A caller that leaves first hands the reply
// to the worker (abandoned).
func (p *pipeliner) do(c *call) ([]int64, error) {
	ctx := c.ctx
	c.done = make(chan struct{})
	select {
	case p.in <- c:
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-p.quit:
		return nil, redis.ErrClosed
	}
	select {
	case <-c.done:
		return c.vals, c.err
	case <-ctx.Done():
		if c.state.CompareAndSwap(callPending, callAbandoned) {
			return nil, ctx.Err()
		}
		<-c.done // answered at the same moment: take the answer
		return c.vals, c.err
	}
}

func (p *pipeliner) work() {
	defer p.wg.Done()
	batch := make([]*call, 0, maxBatch)
	for {
		select {
		case <-p.quit:
			return
		case c := <-p.in:
			batch = append(batch[:0], c)
		}
	fill:
		for len(batch) < maxBatch {
			select {
			case c := <-p.in:
				batch = append(batch, c)
			default:
				break fill
			}
		}
		p.send(batch)
	}
}

// send runs one batch and finishes every call in it.
func (p *pipeliner) send(batch []*call) {
	live := batch[:0:0]
	deadline := time.Now().Add(p.s.timeout)
	var lateWait time.Time // the latest fail-closed deadline + lateReplyWait
	for _, c := range batch {
		if err := c.ctx.Err(); err != nil {
			c.err = err
			close(c.done)
			continue
		}
		d, ok := c.ctx.Deadline()
		switch {
		case ok && c.failClosed:
			if w := d.Add(lateReplyWait); w.After(lateWait) {
				lateWait = w
			}
		case ok && d.Before(deadline):
			deadline = d
		}
		live = append(live, c)
	}
	if lateWait.After(deadline) {
		deadline = lateWait
	}
	if len(live) == 0 {
		return
	}
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	client := p.s.c
	if !lateWait.IsZero() {
		client = p.s.settle // the read timeout is the deadline's, not Options.Timeout
	}
	retry := p.pipeline(ctx, client, live)
	if len(retry) > 0 {
		// Redis lost the script: load it once, then send those calls again.
		if err := p.s.decide.Load(ctx, p.s.c).Err(); err != nil {
			for _, c := range retry {
				c.err = err
			}
		} else {
			p.pipeline(ctx, client, retry) // a second NOSCRIPT keeps its error
		}
	}
	for _, c := range live {
		if c.err != nil {
			c.err = fmt.Errorf("pipelined: %w", c.err)
		}
		if !c.state.CompareAndSwap(callPending, callAnswered) {
			p.refunds.Go(func() { p.abandoned(c) })
		}
		close(c.done)
	}
}

// pipeline sends calls as EVALSHA commands in one pipeline, sets each
// call's answer, and returns the calls that met NOSCRIPT.
func (p *pipeliner) pipeline(ctx context.Context, client redis.UniversalClient, calls []*call) (noScript []*call) {
	cmds := make([]*redis.Cmd, len(calls))
	_, _ = client.Pipelined(ctx, func(pipe redis.Pipeliner) error {
		for i, c := range calls {
			cmds[i] = pipe.EvalSha(ctx, p.s.decide.Hash(), c.keys, c.args...)
		}
		return nil
	})
	for i, c := range calls {
		c.vals, c.err = cmds[i].Int64Slice()
		if c.err != nil && redis.HasErrorPrefix(c.err, "NOSCRIPT") {
			noScript = append(noScript, c)
		}
	}
	return noScript
}
