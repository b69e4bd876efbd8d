package redisstore

import (
	"context"
	"fmt"
	"sync"

	"github.com/redis/go-redis/v9"
)

// Implicit pipelining: concurrent decisions are queued and a few workers
// each send whatever is queued as one pipeline of EVALSHA commands, so a
// busy service pays one network round trip and a couple of system calls per
// batch instead of per decision. Each command is still its own script run,
// atomic on its own. A command whose script Redis has lost (NOSCRIPT) is
// sent again alone with EVAL.
const (
	pipelineWorkers = 4  // batches in flight at once
	maxBatch        = 64 // commands in one pipeline
)

// call is one queued script run. The worker sets vals or err, then closes
// done.
type call struct {
	keys []string
	args []any
	vals []int64
	err  error
	done chan struct{}
}

type pipeliner struct {
	s    *Store
	in   chan *call
	quit chan struct{}
	wg   sync.WaitGroup
}

func newPipeliner(s *Store) *pipeliner {
	p := &pipeliner{s: s, in: make(chan *call, 4*maxBatch), quit: make(chan struct{})}
	for range pipelineWorkers {
		p.wg.Add(1)
		go p.work()
	}
	return p
}

// stop ends the workers and waits for them. Queued calls fail.
func (p *pipeliner) stop() {
	close(p.quit)
	p.wg.Wait()
}

// do queues a decision and waits for it or for ctx.
func (p *pipeliner) do(ctx context.Context, keys []string, args []any) ([]int64, error) {
	c := &call{keys: keys, args: args, done: make(chan struct{})}
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
		return nil, ctx.Err()
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

// send runs one batch with one deadline and finishes every call in it.
func (p *pipeliner) send(batch []*call) {
	ctx, cancel := context.WithTimeout(context.Background(), p.s.timeout)
	defer cancel()
	if len(batch) == 1 {
		c := batch[0]
		c.vals, c.err = p.s.decide.Run(ctx, p.s.c, c.keys, c.args...).Int64Slice()
		close(c.done)
		return
	}
	cmds := make([]*redis.Cmd, len(batch))
	_, _ = p.s.c.Pipelined(ctx, func(pipe redis.Pipeliner) error {
		for i, c := range batch {
			cmds[i] = pipe.EvalSha(ctx, p.s.decide.Hash(), c.keys, c.args...)
		}
		return nil
	})
	for i, c := range batch {
		c.vals, c.err = cmds[i].Int64Slice()
		if c.err != nil && redis.HasErrorPrefix(c.err, "NOSCRIPT") {
			// Redis restarted or flushed its scripts: EVAL caches it again.
			c.vals, c.err = p.s.decide.Eval(ctx, p.s.c, c.keys, c.args...).Int64Slice()
		}
		if c.err != nil {
			c.err = fmt.Errorf("pipelined: %w", c.err)
		}
		close(c.done)
	}
}
