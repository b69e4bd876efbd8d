package store

import (
	"container/heap"
	"context"
	"fmt"
	"hash/maphash"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/leakytokens/leaky/ratelimit/gcra"
)

// DefaultMaxKeys is the bucket bound of a Memory whose MaxKeys is 0. A
// bucket with a 64-byte key takes about 220 bytes, so about 230 MB.
const DefaultMaxKeys = 1 << 20

// DefaultSweepInterval is how often Memory.Run drops idle buckets when
// MemoryOptions.SweepInterval is 0.
const DefaultSweepInterval = 10 * time.Second

const (
	maxShards      = 64
	minShardKeys   = 1024 // fewer shards for small stores, so eviction stays near-global
	sweepPerAccess = 8    // idle buckets dropped from each shard a call locks
)

// MemoryOptions configures NewMemory. The zero value is usable.
type MemoryOptions struct {
	// Now returns the current time in µs since the Unix epoch. Nil uses the
	// wall clock (time.Now().UnixMicro()).
	Now func() int64
	// MaxKeys bounds how many buckets are held; 0 means DefaultMaxKeys. The
	// bound is split evenly over the shards (up to 64, each of at least 1024
	// buckets), so the store holds at most MaxKeys buckets, a shard may fill
	// before the others, and an eviction chooses within one shard.
	MaxKeys int
	// SweepInterval is how often Run drops idle buckets; 0 means
	// DefaultSweepInterval.
	SweepInterval time.Duration
}

// Memory is the in-process Store and the reference for the others. Buckets
// live in shards, each behind its own mutex; a decision locks the shards of
// its items in index order, so it is atomic and cannot deadlock.
//
// A bucket is idle once it equals a fresh one: a GCRA bucket whose TAT is at
// or before now, a fixed window that has ended. Idle buckets are dropped a
// few at a time by every call that locks their shard, and all at once by
// Sweep (which Run calls periodically). When a shard is at its bound and
// nothing in it is idle, the bucket closest to idle is evicted, which forgets
// its usage (counted by Evictions). Checks (Hits 0) and refused decisions
// never create buckets.
//
// A key names one bucket per algorithm: a GCRA item and a FixedWindow item
// with the same key do not share state. Memory is safe for concurrent use.
type Memory struct {
	now       func() int64
	sweepEach time.Duration
	seed      maphash.Seed
	shardCap  int
	shards    []memShard
	quotas    *quotaPools
	evictions atomic.Uint64
}

var (
	_ Store  = (*Memory)(nil)
	_ Seeder = (*Memory)(nil)
)

// NewMemory returns an empty Memory.
func NewMemory(opts MemoryOptions) *Memory {
	m := &Memory{now: opts.Now, sweepEach: opts.SweepInterval, seed: maphash.MakeSeed()}
	if m.now == nil {
		m.now = func() int64 { return time.Now().UnixMicro() }
	}
	if m.sweepEach <= 0 {
		m.sweepEach = DefaultSweepInterval
	}
	maxKeys := opts.MaxKeys
	if maxKeys <= 0 {
		maxKeys = DefaultMaxKeys
	}
	n := 1
	for n < maxShards && maxKeys/(n*2) >= minShardKeys {
		n *= 2
	}
	m.shardCap = maxKeys / n
	m.quotas = newQuotaPools(maxKeys)
	m.shards = make([]memShard, n)
	for i := range m.shards {
		m.shards[i].buckets = make(map[bucketKey]*bucket)
	}
	return m
}

// Evictions is how many buckets were dropped before they were idle because
// their shard was full.
func (m *Memory) Evictions() uint64 { return m.evictions.Load() }

// Len is the number of buckets held, idle ones not yet swept included.
func (m *Memory) Len() int {
	n := 0
	for i := range m.shards {
		s := &m.shards[i]
		s.mu.Lock()
		n += len(s.buckets)
		s.mu.Unlock()
	}
	return n
}

// Sweep drops every idle bucket and returns how many it dropped.
func (m *Memory) Sweep() int {
	n := 0
	for i := range m.shards {
		s := &m.shards[i]
		s.mu.Lock()
		n += s.sweep(m.now(), -1)
		s.mu.Unlock()
	}
	m.quotas.mu.Lock()
	n += m.quotas.sweep(m.now())
	m.quotas.mu.Unlock()
	return n
}

// Run calls Sweep every SweepInterval until ctx is done, then returns nil.
// Without Run, idle buckets are still dropped as their shards are used.
func (m *Memory) Run(ctx context.Context) error {
	t := time.NewTicker(m.sweepEach)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			m.Sweep()
		}
	}
}

// Decide implements Store. Items are decided in order against the state the
// earlier items of the same decision left, so a key that appears twice sees
// its first hits; nothing is stored unless every non-shadow item is allowed.
// Each Result's Remaining and ResetAfter describe its bucket after the whole
// decision: charged when it is allowed, untouched when it is refused. Items
// sharing a key should share its limit and period; if they do not, the
// bucket ends in the state the last of them leaves.
//
// On a fail-closed ctx (WithFailClosed) the deadline is checked inside the
// critical section, with every shard of the decision locked: a decision
// that gets there at or after ctx's deadline charges nothing and returns
// ErrLate, wrapped.
func (m *Memory) Decide(ctx context.Context, items []Item) (Decision, error) {
	if err := Late(ctx, time.Now()); err != nil {
		return Decision{}, err
	}
	if err := ctx.Err(); err != nil {
		return Decision{}, err
	}
	for i, it := range items {
		if err := it.validateDecide(); err != nil {
			return Decision{}, fmt.Errorf("item %d: %w", i, err)
		}
	}
	var buf [8]pending
	ps := buf[:0]
	for i, it := range items {
		p := pending{key: bucketKey{it.Algorithm, it.Key}, first: i, last: i}
		p.shard = int(maphash.String(m.seed, it.Key) & uint64(len(m.shards)-1))
		for j := range ps {
			if ps[j].first == j && ps[j].key == p.key {
				p.first = j
				break
			}
		}
		ps = append(ps, p)
	}
	var sbuf [8]int
	locked := m.lock(ps, sbuf[:0])
	now := m.now()
	defer m.unlock(locked, now)
	if err := Late(ctx, time.Now()); err != nil {
		return Decision{}, err // a wait for the locks (or the clock) made it late
	}
	var qt *qtxn
	if hasQuota(items) {
		// Taken after the shards, always: the lock order stays fixed.
		m.quotas.mu.Lock()
		defer m.quotas.mu.Unlock()
		if idx := m.quotas.unseeded(items); len(idx) > 0 {
			return Decision{}, &UnseededError{Items: idx}
		}
		qt = m.quotas.txn(now)
	}
	res := make([]Result, len(items))
	allowed := true
	for i, it := range items {
		if it.Algorithm == Quota {
			res[i] = qt.decide(it)
			allowed = allowed && (res[i].Allowed || it.Shadow)
			continue
		}
		p := &ps[i]
		if p.first == i {
			if b := m.shards[p.shard].buckets[p.key]; b != nil {
				p.orig = b.state
			}
			p.state = p.orig
		} else {
			first := &ps[p.first]
			p.orig, p.state = first.orig, ps[first.last].state
			first.last = i
		}
		var r Result
		p.state, r = decideItem(now, p.state, it)
		res[i] = Result{Allowed: r.Allowed, RetryAfter: r.RetryAfter}
		if r.Allowed && it.Hits > 0 {
			ps[p.first].charged = true
		}
		if !r.Allowed && !it.Shadow {
			allowed = false
		}
	}
	if qt != nil && !allowed {
		qt = m.quotas.txn(now) // refused: report the pools as they were
	}
	for i, it := range items {
		if it.Algorithm == Quota {
			res[i].Remaining = qt.remaining(it)
			if !allowed {
				res[i].FromPurchased = 0 // nothing was taken
			}
			continue
		}
		p := &ps[i]
		final := p.orig
		if allowed {
			final = ps[ps[p.first].last].state
			if p.first == i && p.charged {
				m.shards[p.shard].put(m, now, p.key, final)
			}
		}
		res[i].Remaining, res[i].ResetAfter = view(now, final, it)
	}
	if qt != nil && allowed {
		qt.commit(m)
	}
	return Decision{Allowed: allowed, Results: res}, nil
}

// Adjust implements Store. Adjustments are applied one by one, each
// atomically; none is applied if any item is invalid. Delta is clamped to
// ±gcra.MaxSpan.
func (m *Memory) Adjust(ctx context.Context, adj []Adjustment) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	for i, a := range adj {
		if err := a.Item.Validate(); err != nil {
			return fmt.Errorf("adjustment %d: %w", i, err)
		}
	}
	for _, a := range adj {
		if a.Item.Algorithm == Quota {
			m.quotas.mu.Lock()
			m.quotas.apply(m, m.now(), a)
			m.quotas.mu.Unlock()
			continue
		}
		if a.Once != "" {
			m.quotas.mu.Lock()
			skip := m.quotas.seen(a.Once, m.now(), a.OnceTTL)
			m.quotas.mu.Unlock()
			if skip {
				continue
			}
		}
		key := bucketKey{a.Item.Algorithm, a.Item.Key}
		s := &m.shards[maphash.String(m.seed, a.Item.Key)&uint64(len(m.shards)-1)]
		s.mu.Lock()
		now := m.now()
		var st state
		if b := s.buckets[key]; b != nil {
			st = b.state
		}
		if a.Item.Algorithm == FixedWindow && a.Window != 0 {
			if start, _ := window(now, a.Item.Period); start != a.Window {
				s.mu.Unlock()
				continue // the window it is for is over
			}
		}
		st = adjustItem(now, st, a.Item, a.Delta)
		if st.idleAt <= now || (a.Item.Algorithm == FixedWindow && st.count == 0) {
			s.remove(key)
		} else {
			s.put(m, now, key, st)
		}
		s.sweep(now, sweepPerAccess)
		s.mu.Unlock()
	}
	return nil
}

// lock locks the shards of ps once each, in ascending order so that
// concurrent decisions cannot deadlock, and returns their indexes appended
// to idx.
func (m *Memory) lock(ps []pending, idx []int) []int {
	for _, p := range ps {
		idx = append(idx, p.shard)
	}
	slices.Sort(idx)
	idx = slices.Compact(idx)
	for _, i := range idx {
		m.shards[i].mu.Lock()
	}
	return idx
}

// unlock sweeps a few buckets idle at now from the locked shards and
// unlocks them.
func (m *Memory) unlock(idx []int, now int64) {
	for _, i := range idx {
		m.shards[i].sweep(now, sweepPerAccess)
		m.shards[i].mu.Unlock()
	}
}

// Validate reports, wrapping ErrInvalidItem, why a store cannot decide it:
// an empty key or one longer than MaxKeyLen, an unknown algorithm, Limit or
// Period below 1, negative Hits, a GCRA bucket spanning more than
// gcra.MaxSpan, or a FixedWindow Limit or Period above gcra.MaxSpan (which
// keeps every count and time exact in Lua's doubles).
func (it Item) Validate() error {
	if it.Algorithm == Quota {
		return it.validateQuota()
	}
	switch {
	case it.Key == "":
		return fmt.Errorf("%w: empty key", ErrInvalidItem)
	case len(it.Key) > MaxKeyLen:
		return fmt.Errorf("%w: key of %d bytes exceeds %d", ErrInvalidItem, len(it.Key), MaxKeyLen)
	case it.Limit < 1 || it.Period < 1:
		return fmt.Errorf("%w: limit %d and period %d must be at least 1", ErrInvalidItem, it.Limit, it.Period)
	case it.Hits < 0:
		return fmt.Errorf("%w: negative hits %d", ErrInvalidItem, it.Hits)
	}
	switch it.Algorithm {
	case GCRA:
		if err := (gcra.Limit{Burst: it.Limit, Interval: it.Period}).Validate(); err != nil {
			return fmt.Errorf("%w: %v", ErrInvalidItem, err)
		}
	case FixedWindow:
		if it.Limit > gcra.MaxSpan || it.Period > gcra.MaxSpan {
			return fmt.Errorf("%w: limit %d or window %d µs above %d", ErrInvalidItem, it.Limit, it.Period, gcra.MaxSpan)
		}
	default:
		return fmt.Errorf("%w: unknown algorithm %d", ErrInvalidItem, it.Algorithm)
	}
	return nil
}

// state is one bucket. The bucket is idle, equal to a fresh one, once
// idleAt ≤ now.
type state struct {
	idleAt int64 // GCRA: the TAT; FixedWindow: the window's end
	start  int64 // FixedWindow: the window's start
	count  int64 // FixedWindow: hits in [start, idleAt)
}

// window returns the fixed window of length period holding now.
func window(now, period int64) (start, end int64) {
	r := now % period
	if r < 0 {
		r += period
	}
	return now - r, now - r + period
}

// countIn is the hits st holds in the window [start, end).
func (st state) countIn(start, end int64) int64 {
	if st.start == start && st.idleAt == end {
		return st.count
	}
	return 0
}

// decideItem decides one item against st and returns the state after it,
// equivalent to st when the item is refused.
func decideItem(now int64, st state, it Item) (state, Result) {
	if it.Algorithm == GCRA {
		tat, r := gcra.Decide(now, st.idleAt, gcra.Limit{Burst: it.Limit, Interval: it.Period}, it.Hits)
		return state{idleAt: tat}, Result{Allowed: r.Allowed, Remaining: r.Remaining, RetryAfter: r.RetryAfter, ResetAfter: r.ResetAfter}
	}
	start, end := window(now, it.Period)
	count := st.countIn(start, end)
	next := state{idleAt: end, start: start, count: count}
	switch {
	case it.Hits > it.Limit:
		return next, Result{RetryAfter: -1}
	case count+it.Hits > it.Limit:
		return next, Result{RetryAfter: end - now}
	}
	next.count += it.Hits
	return next, Result{Allowed: true}
}

// view is what the bucket st admits at now and how long until it is idle.
func view(now int64, st state, it Item) (remaining, resetAfter int64) {
	if it.Algorithm == GCRA {
		l := gcra.Limit{Burst: it.Limit, Interval: it.Period}
		return gcra.Remaining(now, st.idleAt, l), max(st.idleAt, now) - now
	}
	start, end := window(now, it.Period)
	return max(it.Limit-st.countIn(start, end), 0), end - now
}

// adjustItem applies delta to st: GCRA as gcra.Adjust, FixedWindow to the
// current window's count, kept within [0, gcra.MaxSpan].
func adjustItem(now int64, st state, it Item, delta int64) state {
	delta = min(max(delta, -gcra.MaxSpan), gcra.MaxSpan)
	if it.Algorithm == GCRA {
		return state{idleAt: gcra.Adjust(now, st.idleAt, gcra.Limit{Burst: it.Limit, Interval: it.Period}, delta)}
	}
	start, end := window(now, it.Period)
	count := min(max(st.countIn(start, end)+delta, 0), gcra.MaxSpan)
	return state{idleAt: end, start: start, count: count}
}

// pending is one item of a decision in progress.
type pending struct {
	key         bucketKey
	shard       int
	first       int   // index of the first item with this key
	last        int   // on the first item: index of the latest item with this key
	orig, state state // the stored state; the state after this item
	charged     bool  // on the first item: some item with this key took hits
}

type bucketKey struct {
	alg Algorithm
	key string
}

type bucket struct {
	key   bucketKey
	state state
	index int // position in the shard's heap
}

// memShard holds buckets in a map and in a min-heap on idleAt, so the idle
// ones and the one closest to idle are at the top.
type memShard struct {
	mu      sync.Mutex
	buckets map[bucketKey]*bucket
	heap    idleHeap
}

// put stores st under key, dropping buckets idle at now or else evicting
// one to stay within m.shardCap.
func (s *memShard) put(m *Memory, now int64, key bucketKey, st state) {
	if b := s.buckets[key]; b != nil {
		b.state = st
		heap.Fix(&s.heap, b.index)
		return
	}
	if len(s.buckets) >= m.shardCap && s.sweep(now, -1) == 0 {
		b := heap.Pop(&s.heap).(*bucket)
		delete(s.buckets, b.key)
		m.evictions.Add(1)
	}
	b := &bucket{key: key, state: st}
	s.buckets[key] = b
	heap.Push(&s.heap, b)
}

func (s *memShard) remove(key bucketKey) {
	if b := s.buckets[key]; b != nil {
		heap.Remove(&s.heap, b.index)
		delete(s.buckets, key)
	}
}

// sweep drops up to limit idle buckets (all when limit < 0) and returns how
// many it dropped.
func (s *memShard) sweep(now int64, limit int) int {
	n := 0
	for len(s.heap) > 0 && s.heap[0].state.idleAt <= now && n != limit {
		b := heap.Pop(&s.heap).(*bucket)
		delete(s.buckets, b.key)
		n++
	}
	return n
}

type idleHeap []*bucket

func (h idleHeap) Len() int           { return len(h) }
func (h idleHeap) Less(i, j int) bool { return h[i].state.idleAt < h[j].state.idleAt }
func (h idleHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].index, h[j].index = i, j
}
func (h *idleHeap) Push(x any) {
	b := x.(*bucket)
	b.index = len(*h)
	*h = append(*h, b)
}
func (h *idleHeap) Pop() any {
	old := *h
	b := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	return b
}
