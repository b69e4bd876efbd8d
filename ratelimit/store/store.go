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
}

// Decision is the outcome of a whole request.
type Decision struct {
	Allowed bool     // every non-shadow item allowed; only then was anything charged
	Results []Result // one per Item, in order
}

// Adjustment applies Delta tokens to an item's bucket outside a decision:
// positive debits (and may create GCRA debt), negative refunds. For a fixed
// window it applies to the current window, never below zero.
type Adjustment struct {
	Item  Item
	Delta int64
}

// Store keeps bucket state. Implementations are safe for concurrent use.
type Store interface {
	// Decide decides all items at once, all or nothing.
	Decide(ctx context.Context, items []Item) (Decision, error)
	// Adjust applies the adjustments; each is applied at most once.
	Adjust(ctx context.Context, adj []Adjustment) error
}

// ErrInvalidItem is returned, wrapped, for an item a store cannot decide: an
// empty or oversize key, or a limit or period below 1.
var ErrInvalidItem = errors.New("invalid item")
