// Package gcra is the generic cell rate algorithm: a leaky bucket whose whole
// state is one timestamp, the theoretical arrival time (TAT).
//
// Time is a parameter of every function and is measured in integer
// microseconds since the Unix epoch, the unit Redis TIME returns, so that the
// Go reference here and the Lua script in package redisstore compute the same
// numbers bit for bit (microsecond epochs stay below 2^53 and are exact in
// Lua's doubles). Amounts are tokens.
//
// A Limit has a capacity (Burst, tokens) and an emission interval (Interval,
// microseconds per token, the inverse of the leak rate). A bucket admits n
// tokens at now when TAT' = max(TAT, now) + n·Interval is at most
// now + Burst·Interval. Actual usage above a reservation is applied with
// Adjust and may push TAT past that bound: the excess is debt, which drains at
// the leak rate, so the wait until the next admission is exact.
package gcra

import (
	"errors"
	"fmt"
	"math"
)

// MaxSpan bounds how far ahead of now a TAT may run, in microseconds (about
// 35 years). It keeps every sum below 2^53, exact in int64 and in Lua.
const MaxSpan int64 = 1 << 50

// Limit describes one bucket. The zero Limit is invalid; build one with
// NewLimit.
type Limit struct {
	Burst    int64 // capacity in tokens, ≥ 1
	Interval int64 // microseconds per token (1e6 ÷ leak rate), ≥ 1
}

// NewLimit returns the Limit with capacity burst tokens that leaks rate tokens
// per second. The interval is rounded to whole microseconds, so the effective
// rate is 1e6/round(1e6/rate): exact for rates that divide 1e6 and within
// 0.01 % for rates up to 10,000 tokens/s.
func NewLimit(burst int64, rate float64) (Limit, error) {
	if burst < 1 {
		return Limit{}, fmt.Errorf("capacity %d: must be at least 1", burst)
	}
	if math.IsNaN(rate) || rate <= 0 || rate > 1e6 {
		return Limit{}, fmt.Errorf("leak rate %v: must be above 0 and at most 1e6 tokens/s", rate)
	}
	// Check the interval as a float first: converting a float above
	// MaxInt64 to int64 is implementation-defined (on amd64 it yields
	// MinInt64), which would turn a tiny rate into the fastest one.
	iv := math.Round(1e6 / rate)
	if iv > float64(MaxSpan) {
		return Limit{}, fmt.Errorf("leak rate %v: interval %v µs/token exceeds %d µs", rate, iv, MaxSpan)
	}
	l := Limit{Burst: burst, Interval: int64(iv)}
	return l, l.Validate()
}

// Validate reports whether l can be used by Decide and Adjust.
func (l Limit) Validate() error {
	if l.Burst < 1 || l.Interval < 1 {
		return errors.New("capacity and interval must be at least 1")
	}
	if l.Burst > MaxSpan/l.Interval {
		return fmt.Errorf("capacity %d tokens at %d µs/token spans more than %d µs", l.Burst, l.Interval, MaxSpan)
	}
	return nil
}

// Tolerance is the span of a full bucket in microseconds.
func (l Limit) Tolerance() int64 { return l.Burst * l.Interval }

// Rate is the leak rate in tokens per second.
func (l Limit) Rate() float64 { return 1e6 / float64(l.Interval) }

// Result is the outcome of one decision.
type Result struct {
	Allowed bool
	// Remaining is how many tokens the bucket would still admit right now,
	// after this decision. It is 0 while the bucket is in debt.
	Remaining int64
	// RetryAfter is how long, in µs, until the same request would be
	// admitted: 0 when admitted, -1 when it never can be (n > Burst).
	RetryAfter int64
	// ResetAfter is how long, in µs, until the bucket is empty again.
	ResetAfter int64
}

// Decide takes n tokens from the bucket whose theoretical arrival time is tat
// (0 for a bucket never seen), at time now. It returns the new TAT, which
// equals max(tat, now) when the request is refused or n is 0 (check only).
// A refused request changes nothing: callers may discard the returned TAT.
func Decide(now, tat int64, l Limit, n int64) (int64, Result) {
	if tat < now {
		tat = now
	}
	if n < 0 {
		n = 0
	}
	tau := l.Tolerance()
	if n > l.Burst {
		return tat, Result{Remaining: remaining(now, tat, l), RetryAfter: -1, ResetAfter: tat - now}
	}
	next := tat + n*l.Interval
	if next-now > tau {
		return tat, Result{Remaining: remaining(now, tat, l), RetryAfter: next - tau - now, ResetAfter: tat - now}
	}
	return next, Result{Allowed: true, Remaining: remaining(now, next, l), ResetAfter: next - now}
}

// Adjust applies delta tokens to the bucket without a decision: a positive
// delta is a debit that may exceed the capacity (debt), a negative one a
// refund that never takes the TAT below now. The TAT never runs more than
// MaxSpan ahead of now.
func Adjust(now, tat int64, l Limit, delta int64) int64 {
	if tat < now {
		tat = now
	}
	limit := MaxSpan / l.Interval
	switch {
	case delta > limit:
		delta = limit
	case delta < -limit:
		delta = -limit
	}
	next := tat + delta*l.Interval
	if next < now {
		next = now
	}
	if next-now > MaxSpan {
		next = now + MaxSpan
	}
	return next
}

// Remaining is the number of tokens the bucket admits at now.
func Remaining(now, tat int64, l Limit) int64 {
	if tat < now {
		tat = now
	}
	return remaining(now, tat, l)
}

func remaining(now, tat int64, l Limit) int64 {
	free := l.Tolerance() - (tat - now)
	if free <= 0 {
		return 0
	}
	return free / l.Interval
}
