package redisstore

import (
	"context"
	"fmt"
	"strconv"

	"github.com/leakytokens/leaky/ratelimit/store"
)

// The scripts' algorithm codes for a Quota item: with a purchased-balance
// key (sent after the items' keys) or without one.
const (
	algQuotaBalance   = 2
	algQuotaNoBalance = 3
)

// quotaPrelude gives the scripts the store's quota lifetimes, in ms.
var quotaPrelude = fmt.Sprintf("local QUOTA_GRACE_MS, BALANCE_TTL_MS, ONCE_TTL_MS = %d, %d, %d\n",
	store.QuotaGrace.Milliseconds(), store.BalanceTTL.Milliseconds(), store.OnceTTL.Milliseconds())

// balanceKey is the Redis key of a Quota item's purchased balance. A
// window's counter is under "q:" (see key), a Once key under "qo:".
func (s *Store) balanceKey(it store.Item) string {
	if s.cluster {
		return s.prefix + "qb:" + s.tagged(it, it.Purchased)
	}
	return s.prefix + "qb:" + it.Purchased
}

// genKey is the Redis key of a Quota item's pool's seed generation (see
// store.Seeder): absent is 0; a credit that finds no balance INCRs it and
// sets its TTL to the balance's.
func (s *Store) genKey(it store.Item) string {
	if s.cluster {
		return s.prefix + "qg:" + s.tagged(it, it.Purchased)
	}
	return s.prefix + "qg:" + it.Purchased
}

// Generations implements store.Seeder with one MGET.
func (s *Store) Generations(ctx context.Context, items []store.Item) ([]int64, error) {
	gens := make([]int64, len(items))
	var keys []string
	var idx []int
	for i, it := range items {
		if it.Algorithm == store.Quota && it.Purchased != "" {
			keys, idx = append(keys, s.genKey(it)), append(idx, i)
		}
	}
	if len(keys) == 0 {
		return gens, ctx.Err()
	}
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	mget := s.c.MGet
	if s.cluster {
		mget = s.getBySlot // MGET cannot span slots
	}
	vals, err := mget(ctx, keys...).Result()
	if err != nil {
		return nil, fmt.Errorf("redis seed generations: %w", err)
	}
	for j, v := range vals {
		if v == nil {
			continue
		}
		str, _ := v.(string)
		if gens[idx[j]], err = strconv.ParseInt(str, 10, 64); err != nil {
			return nil, fmt.Errorf("redis seed generation %q: %w", keys[j], err)
		}
	}
	return gens, nil
}

// validateDecide is Item.Validate for an item of a decision: a quota item
// there needs its window key.
func validateDecide(it store.Item) error {
	if it.Algorithm == store.Quota && it.Key == "" {
		return fmt.Errorf("%w: a quota item of a decision needs its window key", store.ErrInvalidItem)
	}
	return it.Validate()
}

// unseeded is the error of a decision the script refused because the
// items at idx (0-based) have no balance key.
func unseeded(idx []int64) error {
	e := &store.UnseededError{Items: make([]int, len(idx))}
	for i, v := range idx {
		e.Items[i] = int(v)
	}
	return fmt.Errorf("redis decide: %w", e)
}

// Seed implements store.Seeder with one script call: each seed's window
// counter and balance are set where the keys do not exist, and the Once
// keys of what it creates with them; nothing when a balance it would
// create has another generation (store.ErrStaleSeed).
func (s *Store) Seed(ctx context.Context, seeds []store.Seed) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if s.cluster && len(seeds) > 1 {
		if groups := s.seedSlots(seeds); len(groups) > 1 {
			return s.seedBySlot(ctx, seeds, groups)
		}
	}
	keys := make([]string, 0, 3*len(seeds))
	args := make([]any, 0, 1+8*len(seeds))
	args = append(args, s.time())
	for i, sd := range seeds {
		it := sd.Item
		if it.Algorithm != store.Quota {
			return fmt.Errorf("seed %d: %w: not a quota item", i, store.ErrInvalidItem)
		}
		if err := it.Validate(); err != nil {
			return fmt.Errorf("seed %d: %w", i, err)
		}
		var win, bal int
		if it.Key != "" {
			keys, win = append(keys, s.key(it)), 1
		}
		if it.Purchased != "" {
			keys, bal = append(keys, s.balanceKey(it), s.genKey(it)), 1
		}
		winOnce, balOnce := sd.WindowOnce, sd.Once
		if win == 0 {
			winOnce = nil
		}
		if bal == 0 {
			balOnce = nil
		}
		for _, o := range winOnce {
			keys = append(keys, s.onceKey(it, o))
		}
		for _, o := range balOnce {
			keys = append(keys, s.onceKey(it, o))
		}
		args = append(args, sd.Used, sd.Purchased, it.Period, win, bal, len(winOnce), len(balOnce), sd.Generation)
	}
	if len(seeds) == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	stale, err := s.seed.Run(ctx, s.c, keys, args...).Int64Slice()
	if err != nil {
		return fmt.Errorf("redis seed: %w", err)
	}
	if len(stale) > 0 {
		se := &staleSeeds{idx: make([]int, len(stale))}
		for i, v := range stale {
			se.idx[i] = int(v) - 1
		}
		return fmt.Errorf("redis %w", se)
	}
	return nil
}

// onceKey is the Redis key of an Adjustment.Once key of it.
func (s *Store) onceKey(it store.Item, once string) string {
	if s.cluster {
		return s.prefix + "qo:" + s.tagged(it, "") + once
	}
	return s.prefix + "qo:" + once
}
