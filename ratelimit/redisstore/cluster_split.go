package redisstore

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/redis/go-redis/v9"

	"github.com/leakytokens/leaky/ratelimit/store"
)

// Adjust, Seed and Generations on a cluster: each adjustment and each seed
// is independent of the others, so a call over several slots is one script
// call per slot (in order within a slot), the slots concurrently. A call
// in one slot is exactly the single-Redis call.

// adjustmentSlots groups adj by slot.
func (s *Store) adjustmentSlots(adj []store.Adjustment) [][]int {
	return bySlot(len(adj), func(i int) int { return s.itemSlot(adj[i].Item) })
}

// adjustBySlot is Adjust over several slots: every adjustment is checked
// before any is applied; then each group is applied on its own, and an
// error of one group does not undo another's.
func (s *Store) adjustBySlot(ctx context.Context, adj []store.Adjustment, groups [][]int) error {
	for i, a := range adj {
		if err := a.Item.Validate(); err != nil {
			return fmt.Errorf("adjustment %d: %w", i, err)
		}
	}
	return eachGroup(groups, func(idx []int) error { return s.Adjust(ctx, pick(adj, idx)) })
}

// seedSlots groups seeds by slot.
func (s *Store) seedSlots(seeds []store.Seed) [][]int {
	return bySlot(len(seeds), func(i int) int { return s.itemSlot(seeds[i].Item) })
}

// seedBySlot is Seed over several slots. A stale seed makes its own slot's
// group set nothing; the other groups still seed (each pool is
// independent, and a seed only fills what is absent, so the caller's
// retry of the whole call is safe). The error names every stale seed by
// its index in seeds.
func (s *Store) seedBySlot(ctx context.Context, seeds []store.Seed, groups [][]int) error {
	for i, sd := range seeds {
		if sd.Item.Algorithm != store.Quota {
			return fmt.Errorf("seed %d: %w: not a quota item", i, store.ErrInvalidItem)
		}
		if err := sd.Item.Validate(); err != nil {
			return fmt.Errorf("seed %d: %w", i, err)
		}
	}
	var mu sync.Mutex
	var stale []int
	err := eachGroup(groups, func(idx []int) error {
		err := s.Seed(ctx, pick(seeds, idx))
		var se *staleSeeds
		if errors.As(err, &se) {
			mu.Lock()
			for _, j := range se.idx {
				stale = append(stale, idx[j])
			}
			mu.Unlock()
			return nil
		}
		return err
	})
	if err != nil {
		return err
	}
	if len(stale) > 0 {
		slices.Sort(stale)
		return fmt.Errorf("redis seeds %v: %w", stale, store.ErrStaleSeed)
	}
	return nil
}

// staleSeeds is Seed's error for stale seeds, by index into its seeds.
type staleSeeds struct{ idx []int }

func (e *staleSeeds) Error() string { return fmt.Sprintf("seeds %v: %v", e.idx, store.ErrStaleSeed) }
func (e *staleSeeds) Unwrap() error { return store.ErrStaleSeed }

// getBySlot is MGET for keys in any slots: one GET each, in one pipeline
// that the cluster client splits by node. Missing keys are nil.
func (s *Store) getBySlot(ctx context.Context, keys ...string) *redis.SliceCmd {
	cmds := make([]*redis.StringCmd, len(keys))
	_, _ = s.c.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, k := range keys {
			cmds[i] = p.Get(ctx, k)
		}
		return nil
	})
	out := redis.NewSliceCmd(ctx)
	vals := make([]any, len(keys))
	for i, c := range cmds {
		v, err := c.Result()
		switch {
		case errors.Is(err, redis.Nil):
		case err != nil:
			out.SetErr(err)
			return out
		default:
			vals[i] = v
		}
	}
	out.SetVal(vals)
	return out
}

// eachGroup runs f on every group concurrently and joins the errors.
func eachGroup(groups [][]int, f func(idx []int) error) error {
	errs := make([]error, len(groups))
	var wg sync.WaitGroup
	for g, idx := range groups {
		wg.Go(func() { errs[g] = f(idx) })
	}
	wg.Wait()
	return errors.Join(errs...)
}
