package store

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/leakytokens/leaky/ratelimit/gcra"
)

// Lifetimes of quota state in a store.
const (
	// QuotaGrace is how long a quota window's counter outlives the window:
	// a reservation made in it may still be settled (reservation TTLs are
	// at most a day).
	QuotaGrace = 25 * time.Hour
	// BalanceTTL is how long a pool's purchased balance is kept after its
	// last use (a Redis store renews it when the balance changes and when a
	// window counter of the pool starts, not on every charge: at most once
	// a window). It outlives every calendar window's counter (a month and
	// QuotaGrace), so a counter never outlives its balance in practice; a
	// balance dropped anyway is rebuilt from the ledger (ErrUnseeded).
	BalanceTTL = 35 * 24 * time.Hour
)

// maxOnceKeys bounds the Once keys a Memory remembers; beyond it the
// oldest are forgotten before their OnceTTL.
const maxOnceKeys = 1 << 20

// validateQuota is Validate for a Quota item: Key may be empty only when
// Purchased is set (an adjustment of the balance alone).
func (it Item) validateQuota() error {
	switch {
	case it.Key == "" && it.Purchased == "":
		return fmt.Errorf("%w: a quota item needs a key or a purchased key", ErrInvalidItem)
	case len(it.Key) > MaxKeyLen || len(it.Purchased) > MaxKeyLen:
		return fmt.Errorf("%w: key above %d bytes", ErrInvalidItem, MaxKeyLen)
	case it.Hits < 0 || it.Hits > gcra.MaxSpan:
		return fmt.Errorf("%w: hits %d must be 0 to %d", ErrInvalidItem, it.Hits, gcra.MaxSpan)
	case it.Key == "":
		return nil
	case it.Limit < 1 || it.Period < 1 || it.Limit > gcra.MaxSpan || it.Period > gcra.MaxSpan:
		return fmt.Errorf("%w: quota limit %d and period %d must be 1 to %d", ErrInvalidItem, it.Limit, it.Period, gcra.MaxSpan)
	}
	return nil
}

// validateDecide is Validate for an item of a decision: a quota item
// there needs its window key.
func (it Item) validateDecide() error {
	if it.Algorithm == Quota && it.Key == "" {
		return fmt.Errorf("%w: a quota item of a decision needs its window key", ErrInvalidItem)
	}
	return it.Validate()
}

// quotaPools is a Memory's quota state, behind one mutex taken after the
// shards' (so the lock order stays fixed). A pool is named by its
// Purchased key (or, without one, by its window key) and holds its balance
// and its windows' counters, so the two are evicted together: an evicted
// pool is unseeded, and the caller rebuilds it from the ledger.
type quotaPools struct {
	mu    sync.Mutex
	pools map[string]*qpool
	max   int
	once  *onceSet // Once keys kept OnceTTL
	short *onceSet // Once keys kept less (Adjustment.OnceTTL)
}

type qpool struct {
	hasBalance bool
	balance    int64
	gen        int64 // the seed generation (see Seeder)
	windows    map[string]qwindow
	lastUse    int64 // µs
}

type qwindow struct {
	used int64
	end  int64 // µs; the counter is dropped QuotaGrace later
}

func newQuotaPools(max int) *quotaPools {
	return &quotaPools{pools: map[string]*qpool{}, max: max, once: newOnceSet(), short: newOnceSet()}
}

func poolName(it Item) string {
	if it.Purchased != "" {
		return "p:" + it.Purchased
	}
	return "w:" + it.Key
}

// unseeded returns the indexes of quota items whose balance has no state.
func (q *quotaPools) unseeded(items []Item) []int {
	var idx []int
	for i, it := range items {
		if it.Algorithm != Quota || it.Purchased == "" {
			continue
		}
		if p := q.pools[poolName(it)]; p == nil || !p.hasBalance {
			idx = append(idx, i)
		}
	}
	return idx
}

// qtxn is a decision's view of the pools it touches: what they hold after
// the items decided so far, written back only when the decision admits.
type qtxn struct {
	q       *quotaPools
	now     int64
	balance map[string]int64 // pool → balance
	used    map[string]int64 // pool + "\x00" + window key → used
	touched map[string]Item  // pool → an item charging it
}

func (q *quotaPools) txn(now int64) *qtxn {
	return &qtxn{q: q, now: now, balance: map[string]int64{}, used: map[string]int64{}, touched: map[string]Item{}}
}

func (t *qtxn) state(it Item) (pool, win string, used, balance int64) {
	pool, win = poolName(it), poolName(it)+"\x00"+it.Key
	b, okB := t.balance[pool]
	u, okU := t.used[win]
	if !okB || !okU {
		if p := t.q.pools[pool]; p != nil {
			if !okB {
				b = p.balance
			}
			if w, ok := p.windows[it.Key]; !okU && ok && w.end+QuotaGrace.Microseconds() > t.now {
				u = w.used
			}
		}
	}
	return pool, win, u, b
}

// decide decides one quota item: admitted when used + Hits ≤ Limit +
// balance, taken from the window first.
func (t *qtxn) decide(it Item) Result {
	pool, win, used, balance := t.state(it)
	r := Result{ResetAfter: it.Period}
	if used+it.Hits > it.Limit+balance {
		r.RetryAfter = it.Period
		if it.Hits > it.Limit+balance {
			r.RetryAfter = -1
		}
		return r
	}
	fromWindow := min(it.Hits, max(it.Limit-used, 0))
	r.Allowed, r.FromPurchased = true, it.Hits-fromWindow
	t.used[win], t.balance[pool] = used+fromWindow, balance-r.FromPurchased
	if it.Hits > 0 {
		t.touched[pool] = it
	}
	return r
}

// remaining is what it's pool admits in the decision's current view.
func (t *qtxn) remaining(it Item) int64 {
	_, _, used, balance := t.state(it)
	return it.Limit - used + balance
}

// commit writes the charged pools back.
func (t *qtxn) commit(m *Memory) {
	for pool, it := range t.touched {
		p := t.q.get(m, pool, t.now)
		p.lastUse = t.now
		if it.Purchased != "" {
			p.balance = t.balance[pool]
		}
		for k, used := range t.used {
			if len(k) > len(pool) && k[:len(pool)] == pool && k[len(pool)] == 0 {
				key := k[len(pool)+1:]
				w, ok := p.windows[key]
				if !ok {
					w.end = t.now + it.Period
				}
				w.used = used
				p.windows[key] = w
			}
		}
	}
}

// get returns pool name, creating it (evicting another at the bound).
func (q *quotaPools) get(m *Memory, name string, now int64) *qpool {
	if p := q.pools[name]; p != nil {
		return p
	}
	if len(q.pools) >= q.max && q.sweep(now) == 0 {
		for victim := range q.pools {
			delete(q.pools, victim)
			m.evictions.Add(1)
			break
		}
	}
	p := &qpool{windows: map[string]qwindow{}, lastUse: now}
	q.pools[name] = p
	return p
}

// sweep drops ended windows and pools left with nothing to keep.
func (q *quotaPools) sweep(now int64) int {
	n := 0
	for name, p := range q.pools {
		for k, w := range p.windows {
			if w.end+QuotaGrace.Microseconds() <= now {
				delete(p.windows, k)
			}
		}
		if len(p.windows) == 0 && ((!p.hasBalance && p.gen == 0) || p.lastUse+BalanceTTL.Microseconds() <= now) {
			delete(q.pools, name)
			n++
		}
	}
	q.once.prune(now)
	q.short.prune(now)
	return n
}

// applied reports whether Once key was applied within its lifetime.
func (q *quotaPools) applied(key string, now int64) bool {
	return q.once.applied(key, now) || q.short.applied(key, now)
}

// seen reports whether Once key was applied within its lifetime, and
// remembers it otherwise, for ttl (0 = OnceTTL).
func (q *quotaPools) seen(key string, now int64, ttl time.Duration) bool {
	if q.applied(key, now) {
		return true
	}
	if ttl <= 0 || ttl >= OnceTTL {
		q.once.add(key, now, OnceTTL)
	} else {
		q.short.add(key, now, ttl)
	}
	return false
}

// apply applies quota adjustment a unless its Once key was applied. One
// with Once that finds its pool without a balance is not applied and
// leaves its Once key unset: it raises the pool's seed generation.
func (q *quotaPools) apply(m *Memory, now int64, a Adjustment) {
	if a.Once != "" {
		if q.applied(a.Once, now) {
			return
		}
		if name := poolName(a.Item); a.Item.Purchased != "" {
			if p := q.pools[name]; p == nil || !p.hasBalance {
				p = q.get(m, name, now)
				p.gen++
				p.lastUse = now
				return
			}
		}
		q.seen(a.Once, now, a.OnceTTL)
	}
	q.adjust(m, now, a)
}

// adjust applies one adjustment to a quota pool. A pool the store holds
// no balance for (unseeded, evicted) is left alone: the ledger records the
// settlement and the pool is rebuilt from it. A window counter that does
// not exist is created by a credit with a Once key (a window-only
// purchase) and by nothing else.
func (q *quotaPools) adjust(m *Memory, now int64, a Adjustment) {
	it := a.Item
	p := q.pools[poolName(it)]
	if it.Purchased == "" && p == nil && a.Delta < 0 && a.Once != "" {
		p = q.get(m, poolName(it), now)
	}
	if p == nil || (it.Purchased != "" && !p.hasBalance) {
		return
	}
	p.lastUse = now
	delta := min(max(a.Delta, -gcra.MaxSpan), gcra.MaxSpan)
	if it.Key == "" { // the balance alone: a negative delta credits it
		p.balance -= delta
		return
	}
	w, ok := p.windows[it.Key]
	if delta < 0 && it.Purchased != "" {
		back := min(-delta, max(a.ToPurchased, 0))
		p.balance += back
		delta += back
	}
	switch {
	case ok && delta != 0:
		w.used += delta
		p.windows[it.Key] = w
	case !ok && delta < 0 && a.Once != "":
		p.windows[it.Key] = qwindow{used: delta, end: now + it.Period}
	}
}

// seed sets a pool's window counter and balance where absent.
func (q *quotaPools) seed(m *Memory, now int64, s Seed) {
	it := s.Item
	p := q.get(m, poolName(it), now)
	p.lastUse = now
	if it.Purchased != "" && !p.hasBalance {
		p.hasBalance, p.balance = true, s.Purchased
		q.mark(s.Once, now)
	}
	if it.Key == "" {
		return
	}
	if _, ok := p.windows[it.Key]; !ok {
		p.windows[it.Key] = qwindow{used: s.Used, end: now + it.Period}
		q.mark(s.WindowOnce, now)
	}
}

// mark remembers Once keys as applied (a seed counted their credits).
func (q *quotaPools) mark(keys []string, now int64) {
	for _, k := range keys {
		q.seen(k, now, OnceTTL)
	}
}

// stale returns the indexes of the seeds that would create a balance
// under another seed generation than theirs.
func (q *quotaPools) stale(seeds []Seed) []int {
	var idx []int
	for i, s := range seeds {
		if s.Item.Purchased == "" {
			continue
		}
		p := q.pools[poolName(s.Item)]
		if p == nil && s.Generation != 0 || p != nil && !p.hasBalance && p.gen != s.Generation {
			idx = append(idx, i)
		}
	}
	return idx
}

// Generations implements Seeder.
func (m *Memory) Generations(ctx context.Context, items []Item) ([]int64, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	gens := make([]int64, len(items))
	m.quotas.mu.Lock()
	defer m.quotas.mu.Unlock()
	for i, it := range items {
		if p := m.quotas.pools[poolName(it)]; it.Purchased != "" && p != nil {
			gens[i] = p.gen
		}
	}
	return gens, nil
}

// Seed implements Seeder.
func (m *Memory) Seed(ctx context.Context, seeds []Seed) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	for i, s := range seeds {
		if s.Item.Algorithm != Quota {
			return fmt.Errorf("seed %d: %w: not a quota item", i, ErrInvalidItem)
		}
		if err := s.Item.Validate(); err != nil {
			return fmt.Errorf("seed %d: %w", i, err)
		}
	}
	m.quotas.mu.Lock()
	defer m.quotas.mu.Unlock()
	if idx := m.quotas.stale(seeds); len(idx) > 0 {
		return fmt.Errorf("seeds %v: %w", idx, ErrStaleSeed)
	}
	now := m.now()
	for _, s := range seeds {
		m.quotas.seed(m, now, s)
	}
	return nil
}

func hasQuota(items []Item) bool {
	for _, it := range items {
		if it.Algorithm == Quota {
			return true
		}
	}
	return false
}
