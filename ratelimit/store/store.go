// Package store is the contract between the rate-limit service and the places
// that keep bucket state: the types of a decision, the Store interface, and
// Memory, the in-process implementation that is also the reference every
// other implementation is tested against (package storetest).
//
// A decision covers several items (one per descriptor of a request) and is
// all or nothing: when any non-shadow item refuses, no item is charged.
// Times are integer microseconds, as in package gcra.
package store

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Algorithm selects how an Item is decided.
type Algorithm uint8

const (
	// GCRA is the leaky bucket of package gcra: Limit is the capacity in
	// tokens, Period the emission interval in µs per token.
	GCRA Algorithm = iota
	// FixedWindow counts hits in windows aligned to multiples of Period µs
	// since the epoch (envoyproxy/ratelimit's semantics): Limit hits per window.
	FixedWindow
	// Quota is a token allowance per window plus a purchased balance: Key
	// is the window's counter (its name includes the window's start), Limit
	// the window's allowance in tokens, Period the µs until the window ends,
	// Purchased the pool's balance key ("" = none). Hits are admitted when
	// used + Hits ≤ Limit + balance, taken from the window first.
	Quota
)

// MaxKeyLen bounds Item.Key in bytes. Callers hash longer keys.
const MaxKeyLen = 512

// Item is one bucket in one decision.
type Item struct {
	Key       string // store key, at most MaxKeyLen bytes; the store adds its own prefix
	Algorithm Algorithm
	Limit     int64 // GCRA: capacity in tokens; FixedWindow: hits per window
	Period    int64 // GCRA: µs per token; FixedWindow: window length in µs
	Hits      int64 // tokens or hits to take; 0 checks without charging
	Shadow    bool  // decided and reported, but never refuses the request
	// Purchased is a Quota item's purchased-balance key ("" = none), at
	// most MaxKeyLen bytes; the store adds its own prefix.
	Purchased string
}

// Result is the outcome for one Item.
type Result struct {
	// Allowed reports whether this item alone admits its hits. A shadow item
	// may be !Allowed in an admitted decision.
	Allowed bool
	// Remaining is what the bucket admits after this decision.
	Remaining int64
	// RetryAfter is µs until the same hits would be admitted: 0 when
	// allowed, -1 when never (more hits than the limit).
	RetryAfter int64
	// ResetAfter is µs until the bucket is empty (GCRA) or the window ends.
	ResetAfter int64
	// FromPurchased is how much of a Quota item's hits came from its
	// purchased balance (0 for other algorithms).
	FromPurchased int64
}

// Decision is the outcome of a whole request.
type Decision struct {
	Allowed bool     // every non-shadow item allowed; only then was anything charged
	Results []Result // one per Item, in order
}

// Adjustment applies Delta tokens to an item's bucket outside a decision:
// positive debits (and may create GCRA debt), negative refunds. For a fixed
// window it applies to the current window, never below zero.
//
// On a Quota item a debit goes to the window's counter, beyond its
// allowance if need be (Remaining = Limit − used + balance stays exact); a
// refund goes to the balance first, up to ToPurchased, and the rest to the
// window. An Item with only Purchased
// set (Key "") adjusts the balance alone: a negative Delta credits it.
// A pool without a balance in the store is left alone (the ledger has the
// adjustment and the pool is rebuilt from it); an adjustment with Once
// that finds it so does not set its Once key and raises the pool's seed
// generation (see Seeder). A window counter that does
// not exist is created by a credit (a negative Delta with Once set: a
// purchase for the window), as a charge creates it (its TTL Period plus
// QuotaGrace), and left alone otherwise (a refund to a counter that is
// gone: the charge went with it).
type Adjustment struct {
	Item  Item
	Delta int64
	// ToPurchased bounds what a Quota refund returns to the balance: what
	// the reservation took from it (Result.FromPurchased).
	ToPurchased int64
	// Once, when set, makes the adjustment idempotent: a store applies an
	// adjustment with the same Once at most once within OnceTTL.
	Once string
	// OnceTTL is how long the store remembers Once; 0 means OnceTTL (the
	// package constant). A key that only has to outlive its caller's
	// retries (a settlement's) asks for less, so such keys do not pile up.
	OnceTTL time.Duration
	// Window, on a FixedWindow item, is the start (µs) of the window the
	// adjustment is for: once that window is over the adjustment is
	// skipped, so a refund never lands in the next window. 0 = the current
	// window.
	Window int64
}

// OnceTTL is how long a store remembers an Adjustment.Once key.
const OnceTTL = 7 * 24 * time.Hour

// Store keeps bucket state. Implementations are safe for concurrent use.
type Store interface {
	// Decide decides all items at once, all or nothing.
	Decide(ctx context.Context, items []Item) (Decision, error)
	// Adjust applies the adjustments; each is applied at most once.
	Adjust(ctx context.Context, adj []Adjustment) error
}

// ErrUnseeded is returned, wrapped in an *UnseededError, by Decide when a
// Quota item's pool has no state in the store (never seeded, or the store
// lost its data): nothing was charged. The caller reads the pool's state
// from the ledger, calls Seed, and decides again.
var ErrUnseeded = errors.New("quota pool not seeded")

// UnseededError names the items (indexes into the Decide call's items)
// whose pools need seeding.
type UnseededError struct{ Items []int }

func (e *UnseededError) Error() string { return ErrUnseeded.Error() }

// Unwrap makes errors.Is(err, ErrUnseeded) hold.
func (e *UnseededError) Unwrap() error { return ErrUnseeded }

// Seed is the state of one quota pool as the ledger records it.
type Seed struct {
	Item      Item  // the Quota item (Key, Period and Purchased are used)
	Used      int64 // tokens used of the item's window
	Purchased int64 // the pool's purchased balance
	// Once are the Adjustment.Once keys of the credits Purchased already
	// counts whose adjustment is still to come (ledger.QuotaState's
	// Pending, as "saga:"+id), WindowOnce those of the credits Used
	// counts (PendingWindow): Seed marks them applied, for OnceTTL, in the
	// same atomic step that creates the balance (Once) or the window
	// counter (WindowOnce), so such a credit is counted once. A seed that
	// finds the balance (or counter) there marks nothing: the state there
	// did not count those credits.
	Once, WindowOnce []string
	// Generation is the pool's seed generation (Seeder.Generations) read
	// before the ledger was: Seed creates no balance once it changed.
	Generation int64
}

// Seeder is implemented by stores that keep Quota items.
//
// A pool has a seed generation, 0 until a credit (an Adjustment with Once)
// finds the pool without a balance: such a credit is not applied, its Once
// key is not set, and the generation goes up (kept BalanceTTL). The credit
// is in the ledger by then, but a seed whose ledger read came before it
// would not count it: the seed reads the generation first, and Seed
// refuses to create the balance under another one.
type Seeder interface {
	// Generations returns the seed generation of each item's pool (0 for
	// an item without a Purchased key).
	Generations(ctx context.Context, items []Item) ([]int64, error)
	// Seed sets each seed's window counter and balance where the store has
	// no state for them, with their Once keys; state already there (a
	// concurrent seed or charge) is kept. When a balance it would create
	// has another generation than its seed's, Seed sets nothing at all and
	// returns ErrStaleSeed (wrapped): the caller reads the generations and
	// the ledger again.
	Seed(ctx context.Context, seeds []Seed) error
}

// ErrStaleSeed is returned, wrapped, by Seed when a pool's seed generation
// changed since the seed's was read: a credit the seed's ledger read may
// have missed found the pool unseeded. Nothing was set.
var ErrStaleSeed = errors.New("quota seed stale: a credit found the pool unseeded")

// ErrInvalidItem is returned, wrapped, for an item a store cannot decide: an
// empty or oversize key, or a limit or period below 1.
var ErrInvalidItem = errors.New("invalid item")

// ErrLate is returned, wrapped, by a decision (Decide, DecideReserve) on a
// fail-closed context (WithFailClosed) that the store executed, or would
// have executed, after its deadline: the earlier of the context's deadline
// and the store's own timeout. Nothing was charged. The caller answers it
// by its failure mode, like any store failure.
var ErrLate = errors.New("the decision reached the store after its deadline; nothing was charged")

// failClosedKey marks a fail-closed context.
type failClosedKey struct{}

// WithFailClosed returns ctx marked fail-closed: its caller refuses the
// request when the decision fails, so a decision the store executes after
// ctx's deadline (or the store's own timeout) must charge nothing and
// return ErrLate, wrapped. A decision on an unmarked (fail-open) context
// charges whenever the store executes it, as the request goes through
// either way.
func WithFailClosed(ctx context.Context) context.Context {
	return context.WithValue(ctx, failClosedKey{}, true)
}

// FailClosed reports whether ctx was marked by WithFailClosed.
func FailClosed(ctx context.Context) bool {
	v, _ := ctx.Value(failClosedKey{}).(bool)
	return v
}

// Late reports, for a fail-closed ctx whose deadline is at or before now,
// an error wrapping ErrLate (and ctx's error, if any); nil otherwise. A
// store calls it where it commits a decision, inside its critical section.
func Late(ctx context.Context, now time.Time) error {
	if !FailClosed(ctx) {
		return nil
	}
	d, ok := ctx.Deadline()
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("%w: %w", ErrLate, err)
	}
	if ok && !now.Before(d) {
		return fmt.Errorf("%w: %w", ErrLate, context.DeadlineExceeded)
	}
	return nil
}
