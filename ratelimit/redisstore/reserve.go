package redisstore

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/leakytokens/leaky/ratelimit/store"
)

// Reservation records (store.Reserver) live under Prefix + "r:" + id, each
// with a TTL of the reservation's plus store.ReservationGrace; the index
// Prefix + "rx" scores every open id with its expiry and lives as long as
// its longest-lived record. DecideReserve is decide.lua with the record's
// arguments: the decision and the record's opening in one script, one
// round trip. reserve.lua does each other step atomically: opening (SET
// NX, so an id is held once across instances), taking (only before the
// expiry; the record moves to a lease, Prefix + "rt:" + nonce + ":" + id,
// for store.ReservationLease, so a retried take gets it back) and claiming
// expired records (a ZREM that returns 1 makes its caller the only one to
// get the record).
//
// Every call but DecideReserve is bounded by the caller's deadline (the
// store's timeout when ctx has none), not by Options.Timeout: they settle
// reservations, after the request's answer, where a caller gives them
// seconds. DecideReserve is a decision, bounded as Decide is.

var _ store.Reserver = (*Store)(nil)

func (s *Store) recordKey(id string) string { return s.prefix + s.rxTag() + "r:" + id }
func (s *Store) indexKey() string           { return s.prefix + s.rxTag() + "rx" }
func (s *Store) leaseKey(id, nonce string) string {
	return s.prefix + s.rxTag() + "rt:" + nonce + ":" + id
}

// DecideReserve implements store.Reserver with one decide.lua call.
func (s *Store) DecideReserve(ctx context.Context, items []store.Item, id string, rec []byte, ttl time.Duration) (store.Decision, error) {
	if err := store.ValidateDecideReserve(id, rec, len(items), ttl); err != nil {
		return store.Decision{}, err
	}
	if s.cluster {
		return s.decideReserveBySlot(ctx, items, id, rec, ttl)
	}
	return s.runDecide(ctx, items, &reserveArgs{
		keys: [2]string{s.recordKey(id), s.indexKey()},
		args: [4]any{id, rec, ttl.Microseconds(), store.ReservationGrace.Milliseconds()},
	})
}

// reserveArgs are decide.lua's extra KEYS and ARGV that open a record.
type reserveArgs struct {
	keys [2]string
	args [4]any
}

// OpenReservation implements store.Reserver.
func (s *Store) OpenReservation(ctx context.Context, id string, rec []byte, ttl time.Duration) error {
	if err := store.ValidateReservation(id, rec, ttl); err != nil {
		return err
	}
	n, err := s.runReserve(ctx, []string{s.recordKey(id), s.indexKey()},
		"open", id, rec, ttl.Microseconds(), store.ReservationGrace.Milliseconds()).Int64()
	switch {
	case err != nil:
		return fmt.Errorf("redis open reservation: %w", err)
	case n == 0:
		return store.ErrReservationExists
	}
	return nil
}

// TakeReservation implements store.Reserver.
func (s *Store) TakeReservation(ctx context.Context, id, nonce string) ([]byte, bool, error) {
	if nonce == "" || len(nonce) > store.MaxNonceLen {
		return nil, false, fmt.Errorf("%w: nonce must be 1 to %d bytes", store.ErrInvalidReservation, store.MaxNonceLen)
	}
	if id == "" || len(id) > store.MaxKeyLen {
		return nil, false, nil // never opened
	}
	v, err := s.runReserve(ctx, []string{s.recordKey(id), s.indexKey(), s.leaseKey(id, nonce)},
		"take", id, store.ReservationLease.Milliseconds()).Text()
	switch {
	case errors.Is(err, redis.Nil):
		return nil, false, nil
	case err != nil:
		return nil, false, fmt.Errorf("redis take reservation: %w", err)
	}
	return []byte(v), true, nil
}

// ClaimExpired implements store.Reserver in two calls: the ids due, then
// the claim of those still due.
func (s *Store) ClaimExpired(ctx context.Context, limit int) ([]store.ReservationRecord, error) {
	if limit <= 0 {
		return nil, nil
	}
	ids, err := s.runReserve(ctx, []string{s.indexKey()}, "due", limit).StringSlice()
	if err != nil {
		return nil, fmt.Errorf("redis expired reservations: %w", err)
	}
	if len(ids) == 0 {
		return nil, nil
	}
	keys := make([]string, 0, 1+len(ids))
	args := make([]any, 0, len(ids))
	keys = append(keys, s.indexKey())
	for _, id := range ids {
		keys = append(keys, s.recordKey(id))
		args = append(args, id)
	}
	vals, err := s.runReserve(ctx, keys, "claim", args...).StringSlice()
	if err != nil {
		return nil, fmt.Errorf("redis claim reservations: %w", err)
	}
	out := make([]store.ReservationRecord, 0, len(vals)/2)
	for i := 0; i+1 < len(vals); i += 2 {
		out = append(out, store.ReservationRecord{ID: vals[i], Rec: []byte(vals[i+1])})
	}
	return out, nil
}

// runReserve runs reserve.lua's op within the caller's deadline.
func (s *Store) runReserve(ctx context.Context, keys []string, op string, args ...any) *redis.Cmd {
	ctx, cancel := s.settleContext(ctx)
	defer cancel()
	return s.reserve.Run(ctx, s.settle, keys, append([]any{s.time(), op}, args...)...)
}
