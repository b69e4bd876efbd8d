// Package redisstore is the store.Store kept in Redis, shared by every
// instance of the rate-limit service. Each Decide is one Lua script that
// decides and charges all items atomically; each Adjust is another. The
// scripts mirror package gcra and store.Memory bit for bit and read the time
// from Redis TIME, so instances never disagree about it.
//
// Every decision (Decide, DecideReserve) has a deadline of at most
// Options.Timeout; Adjust and the reservation records' calls, which settle
// after a request was answered, have the caller's deadline (Options.Timeout
// when ctx has none). No call is retried here: a dead or hung Redis costs a
// caller one deadline, not go-redis's default retries and dial back-offs
// (about 1.7 s). A call that times out may or may not have been applied; it
// is never applied twice (TakeReservation's nonce makes its caller's retry
// safe). A fail-closed decision (store.WithFailClosed) is the exception: it
// charges nothing past its deadline (late.go).
//
// Keys are Options.Prefix + "g:" + item key for GCRA buckets and
// Options.Prefix + "w:" + item key for fixed windows. Every key written
// carries a TTL that ends once the bucket is idle (equal to a fresh one), so
// memory is bounded by the active keys. All keys of one decision are sent
// as KEYS. On a Redis Cluster (a redis+cluster:// URL, cluster.go) every
// key of one item carries one hash tag, so each item lives in one slot,
// and a decision over several slots is one script call per slot with
// compensation (cluster_decide.go).
package redisstore

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"

	"github.com/leakytokens/leaky/ratelimit/gcra"
	"github.com/leakytokens/leaky/ratelimit/store"
)

var (
	//go:embed bucket.lua
	bucketLua string
	//go:embed decide.lua
	decideLua string
	//go:embed adjust.lua
	adjustLua string
	//go:embed seed.lua
	seedLua string
	//go:embed reserve.lua
	reserveLua string
)

// Defaults for the zero fields of Options.
const (
	DefaultPrefix  = "lt:"
	DefaultTimeout = 15 * time.Millisecond // under Envoy's 20 ms rate-limit timeout
)

// startTimeout bounds each round trip of New's script loads (the caller's
// ctx bounds them all).
const startTimeout = 5 * time.Second

// settleCap bounds the read and write timeouts of the calls bounded by
// their caller's deadline; the deadline is what bounds them.
const settleCap = time.Minute

// Options configures New.
type Options struct {
	// URL is the Redis URL: redis://[user:password@]host:port/db, or
	// rediss:// for TLS; or a Redis Cluster's,
	// redis+cluster://[user:password@]host:port,host:port[/][?…] (or
	// rediss+cluster://), naming one or more of its nodes. Timeout, retry
	// and pool settings in its query are overridden by the fields below.
	URL string
	// Prefix starts every key; "" means DefaultPrefix.
	Prefix string
	// Timeout bounds every call, on top of the caller's context; 0 means
	// DefaultTimeout. Dial, read, write and pool waits derive from it.
	Timeout time.Duration
	// PoolSize is the number of connections; 0 means go-redis's default of
	// 10 per CPU.
	PoolSize int
	// Now is for tests only: when set, the scripts use its value (µs since
	// the epoch) as the time instead of Redis TIME.
	Now func() int64
}

// Store is a store.Store in Redis. It is safe for concurrent use.
type Store struct {
	c       redis.UniversalClient // a *redis.Client, or a *redis.ClusterClient when cluster
	cluster bool
	prefix  string
	timeout time.Duration
	now     func() int64
	decide  *redis.Script
	adjust  *redis.Script
	seed    *redis.Script
	reserve *redis.Script
	pipe    *pipeliner
	settle  redis.UniversalClient // s.c with settleCap for its read and write timeouts
	// clock bounds Redis's clock minus the process's (late.go); lostLate
	// counts abandoned fail-closed decisions left charged.
	clock    redisClock
	lostLate atomic.Uint64
	refunded atomic.Uint64 // abandoned fail-closed decisions refunded
}

var (
	_ store.Store  = (*Store)(nil)
	_ store.Seeder = (*Store)(nil)
)

// New connects to Redis and loads the scripts. It fails when opts.URL is
// invalid or Redis does not answer before ctx is done. Later, a lost
// connection or a flushed script cache (a Redis restart, SCRIPT FLUSH) heals
// by itself: connections are redialled, and a script missing from the cache
// is sent again with EVAL, which caches it anew.
func New(ctx context.Context, opts Options) (*Store, error) {
	s := &Store{
		prefix:  opts.Prefix,
		timeout: opts.Timeout,
		now:     opts.Now,
		decide:  redis.NewScript(bucketLua + quotaPrelude + decideLua),
		adjust:  redis.NewScript(bucketLua + quotaPrelude + adjustLua),
		seed:    redis.NewScript(bucketLua + quotaPrelude + seedLua),
		reserve: redis.NewScript(bucketLua + reserveLua),
	}
	if s.prefix == "" {
		s.prefix = DefaultPrefix
	}
	if s.timeout <= 0 {
		s.timeout = DefaultTimeout
	}
	loader, err := s.dial(opts)
	if err != nil {
		return nil, err
	}
	for _, sc := range []*redis.Script{s.decide, s.adjust, s.seed, s.reserve} {
		if err := sc.Load(ctx, loader).Err(); err != nil {
			s.Close()
			return nil, fmt.Errorf("redis script load: %w", err)
		}
	}
	if s.now == nil {
		for i := 0; i < clockAttempts && s.clock.fastSamples() < clockSamples; i++ {
			if err := s.clock.sample(ctx, loader); err != nil {
				s.Close()
				return nil, err
			}
		}
	}
	s.pipe = newPipeliner(s)
	return s, nil
}

// dial sets s's clients for opts.URL, a cluster's (dialCluster) or one
// Redis's, and returns the client that loads the scripts.
func (s *Store) dial(opts Options) (redis.UniversalClient, error) {
	if isClusterURL(opts.URL) {
		return s.dialCluster(opts)
	}
	ro, err := redis.ParseURL(opts.URL)
	if err != nil {
		// The parse error quotes the URL, which may hold a password.
		return nil, errors.New("redis url: cannot parse it (redis://[user:password@]host:port/db; not shown, it may hold a password)")
	}
	ro.MaxRetries = -1
	ro.ContextTimeoutEnabled = true
	ro.DialerRetries = 1
	ro.DialTimeout = max(4*s.timeout, 100*time.Millisecond) // dials run in the background of callers
	ro.ReadTimeout = s.timeout
	ro.WriteTimeout = s.timeout
	ro.PoolTimeout = s.timeout
	ro.MaintNotificationsConfig = &maintnotifications.Config{Mode: maintnotifications.ModeDisabled}
	if opts.PoolSize > 0 {
		ro.PoolSize = opts.PoolSize
	}
	c := redis.NewClient(ro)
	s.c, s.settle = c, c.WithTimeout(settleCap)
	// Loading the scripts is a start-up step bounded by ctx, not a decision:
	// the per-call deadline (15 ms) would fail a start on a busy machine.
	return c.WithTimeout(startTimeout), nil
}

// Decide implements store.Store with one script call. The error, if any,
// is wrapped once; ErrorKind classifies it.
func (s *Store) Decide(ctx context.Context, items []store.Item) (store.Decision, error) {
	if s.cluster {
		return s.decideBySlot(ctx, items)
	}
	return s.runDecide(ctx, items, nil)
}

// runDecide runs decide.lua on items, with rsv's record opened in the same
// run when rsv is not nil, within the store's timeout.
//
// On a fail-closed ctx (store.WithFailClosed) the deadline (the earlier of
// ctx's and the timeout's) goes into the script on Redis's clock (late.go):
// run at or after it, the script charges nothing and the decision returns
// store.ErrLate, wrapped.
func (s *Store) runDecide(ctx context.Context, items []store.Item, rsv *reserveArgs) (store.Decision, error) {
	d, _, err := s.runDecideAt(ctx, items, rsv)
	return d, err
}

// runDecideAt is runDecide that also returns the script's time (µs; 0
// when it did not run), which names the windows it charged.
func (s *Store) runDecideAt(ctx context.Context, items []store.Item, rsv *reserveArgs) (store.Decision, int64, error) {
	if err := store.Late(ctx, time.Now()); err != nil {
		return store.Decision{}, 0, err
	}
	if err := ctx.Err(); err != nil {
		return store.Decision{}, 0, err
	}
	if rsv == nil && len(items) == 0 {
		return store.Decision{Allowed: true, Results: []store.Result{}}, 0, nil
	}
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	c, err := s.decideCall(ctx, items, rsv)
	if err != nil {
		return store.Decision{}, 0, err
	}
	vals, err := s.pipe.do(c)
	if err != nil {
		if c.failClosed && (errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled)) {
			// Given up: a reply still to come is refunded (late.go).
			return store.Decision{}, 0, fmt.Errorf("redis decide: %w: %w", store.ErrLate, err)
		}
		return store.Decision{}, 0, fmt.Errorf("redis decide: %w", err)
	}
	return decodeDecision(items, c.quotas, vals)
}

// decideCall is the pipelined decide.lua call deciding items on ctx (its
// deadline final), opening rsv's record when rsv is not nil.
func (s *Store) decideCall(ctx context.Context, items []store.Item, rsv *reserveArgs) (*call, error) {
	keys := make([]string, len(items), len(items)+2)
	args := make([]any, 0, 2+5*len(items)+4)
	args = append(args, s.time(), "")
	c := &call{ctx: ctx, failClosed: store.FailClosed(ctx), items: items}
	for i, it := range items {
		if err := validateDecide(it); err != nil {
			return nil, fmt.Errorf("item %d: %w", i, err)
		}
		keys[i] = s.key(it)
		shadow := 0
		if it.Shadow {
			shadow = 1
		}
		alg := int(it.Algorithm)
		if it.Algorithm == store.Quota {
			c.quotas++
			alg = algQuotaNoBalance
			if it.Purchased != "" {
				alg = algQuotaBalance
			}
		}
		args = append(args, alg, it.Limit, it.Period, it.Hits, shadow)
	}
	for _, it := range items {
		if it.Algorithm == store.Quota && it.Purchased != "" {
			keys = append(keys, s.balanceKey(it))
		}
	}
	if rsv != nil {
		keys, args = append(keys, rsv.keys[:]...), append(args, rsv.args[:]...)
	}
	if c.failClosed {
		d, err := s.deadlineArg(ctx)
		if err != nil {
			return nil, err
		}
		args[1] = d
		if rsv != nil {
			c.reserveID = rsv.args[0].(string)
		}
	}
	c.keys, c.args = keys, args
	return c, nil
}

// decodeDecision reads decide.lua's reply for items (quotas of them quota
// items): the decision and the script's time.
func decodeDecision(items []store.Item, quotas int, vals []int64) (store.Decision, int64, error) {
	if len(vals) == 1 && vals[0] == -2 {
		return store.Decision{}, 0, store.ErrReservationExists
	}
	if len(vals) == 1 && vals[0] == -3 {
		return store.Decision{}, 0, fmt.Errorf("redis decide: %w", store.ErrLate)
	}
	if len(vals) > 1 && vals[0] == -1 {
		return store.Decision{}, 0, unseeded(vals[1:])
	}
	if len(vals) != 2+4*len(items)+quotas {
		return store.Decision{}, 0, fmt.Errorf("redis decide: %w: %d values for %d items", errBadReply, len(vals), len(items))
	}
	d := store.Decision{Allowed: vals[0] == 1, Results: make([]store.Result, len(items))}
	fromP := vals[1+4*len(items):]
	for i := range d.Results {
		v := vals[1+4*i:]
		d.Results[i] = store.Result{Allowed: v[0] == 1, Remaining: v[1], RetryAfter: v[2], ResetAfter: v[3]}
		if items[i].Algorithm == store.Quota {
			d.Results[i].FromPurchased, fromP = fromP[0], fromP[1:]
		}
	}
	return d, vals[len(vals)-1], nil
}

// Adjust implements store.Store with one script call that applies the
// adjustments in order, within the caller's deadline (settlements run
// after the request was answered; see settleContext). Delta is clamped to
// ±gcra.MaxSpan.
func (s *Store) Adjust(ctx context.Context, adj []store.Adjustment) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if s.cluster && len(adj) > 1 {
		if groups := s.adjustmentSlots(adj); len(groups) > 1 {
			return s.adjustBySlot(ctx, adj, groups)
		}
	}
	keys := make([]string, 0, len(adj))
	args := make([]any, 0, 1+9*len(adj))
	args = append(args, s.time())
	for i, a := range adj {
		if err := a.Item.Validate(); err != nil {
			return fmt.Errorf("adjustment %d: %w", i, err)
		}
		var flags [3]int
		if a.Item.Algorithm != store.Quota || a.Item.Key != "" {
			keys, flags[0] = append(keys, s.key(a.Item)), 1
		}
		if a.Item.Algorithm == store.Quota && a.Item.Purchased != "" {
			keys, flags[1] = append(keys, s.balanceKey(a.Item)), 1
		}
		if a.Once != "" {
			keys, flags[2] = append(keys, s.onceKey(a.Item, a.Once)), 1
			if flags[1] == 1 {
				keys = append(keys, s.genKey(a.Item))
			}
		}
		delta := min(max(a.Delta, -gcra.MaxSpan), gcra.MaxSpan)
		toP := a.ToPurchased
		if a.Item.Algorithm == store.FixedWindow {
			toP = a.Window // adjust.lua reads a fixed window's in that slot
		}
		args = append(args, int(a.Item.Algorithm), a.Item.Limit, a.Item.Period, delta, toP, flags[0], flags[1], flags[2],
			a.OnceTTL.Milliseconds())
	}
	if len(adj) == 0 {
		return nil
	}
	ctx, cancel := s.settleContext(ctx)
	defer cancel()
	if err := s.adjust.Run(ctx, s.settle, keys, args...).Err(); err != nil {
		return fmt.Errorf("redis adjust: %w", err)
	}
	return nil
}

// Ping reports whether Redis answers, for readiness checks: within ctx's
// deadline, or the store's timeout when ctx has none. A readiness probe
// gives it more time than a decision gets, so one slow answer under load
// does not mark the service unready.
func (s *Store) Ping(ctx context.Context) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, s.timeout)
		defer cancel()
	}
	if err := s.c.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("redis ping: %w", err)
	}
	return nil
}

// settleContext is ctx for a call bounded by its caller's deadline: ctx
// itself when it has one, else ctx bounded by the store's timeout.
func (s *Store) settleContext(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, s.timeout)
}

// Close stops the pipeline workers and closes the connections. Calls after
// Close fail.
func (s *Store) Close() error {
	if s.pipe != nil {
		s.pipe.stop()
	}
	if s.cluster { // its own connections (a cluster client has no WithTimeout)
		s.settle.Close()
	}
	return s.c.Close()
}

// key is the Redis key of it's bucket.
func (s *Store) key(it store.Item) string {
	alg := "g:"
	switch it.Algorithm {
	case store.FixedWindow:
		alg = "w:"
	case store.Quota:
		alg = "q:"
	}
	if s.cluster {
		return s.prefix + alg + s.tagged(it, it.Key)
	}
	return s.prefix + alg + it.Key
}

// time is the script's time argument: empty for Redis TIME.
func (s *Store) time() string {
	if s.now == nil {
		return ""
	}
	return strconv.FormatInt(s.now(), 10)
}

// errBadReply marks a script reply of the wrong shape.
var errBadReply = errors.New("unexpected script reply")
