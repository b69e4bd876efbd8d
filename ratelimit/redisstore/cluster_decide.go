package redisstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/leakytokens/leaky/ratelimit/store"
)

// Decisions on a cluster. A request's items live in several slots (user,
// org, provider buckets), so one script cannot decide them all. A decision
// groups its items by slot and runs one decide.lua call per group
// (runDecide: the same script and arguments as on a single Redis), groups
// in ascending slot order, stopping at the first group that refuses,
// fails or is late. Then every earlier group, which was charged, is
// compensated: adjust.lua refunds exactly what each item took (a quota's
// FromPurchased back to its balance via ToPurchased; a fixed window's only
// within the window it charged, Adjustment.Window). A refusal's results
// look like a single Redis's: the refusing group's reply, and for every
// other group a dry run (its items and one item that never fits, so the
// script changes nothing) read after the compensation; a group that
// cannot answer then leaves the refusal standing. A decision in one slot
// is exactly the single-Redis call.
//
// Bounds. Admission never exceeds a bucket's capacity: each group is
// atomic and a decision is admitted only once every group charged. But
// while a decision that is refused at a later group holds its earlier
// groups' tokens (one round trip or two, until its compensation), another
// decision on those buckets may be refused that a single Redis would have
// admitted: a false refusal, bounded by the decisions in flight on a
// bucket, each holding at most its own hits for that time. A process that
// dies (or a compensation that fails, e.g. its node went down) between a
// charge and its compensation leaves that charge standing: an
// over-charge, which the bucket leaks away like any other, never an
// over-admission.

// compensateTimeout bounds a compensation (and the dry run after it); it
// runs even when the caller has given up.
func (s *Store) compensateTimeout() time.Duration {
	return max(4*s.timeout, 250*time.Millisecond)
}

// pastCaller is the context of a store call a decision makes for itself
// after its caller may have left (a compensation, a dry run, a record's
// second open or its drop): bounded by compensateTimeout, not by the
// caller's deadline, and not fail-closed, so it runs even for a late
// decision.
func (s *Store) pastCaller() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), s.compensateTimeout())
}

// decideBySlot is Decide on a cluster.
func (s *Store) decideBySlot(ctx context.Context, items []store.Item) (store.Decision, error) {
	if err := entryErr(ctx); err != nil {
		return store.Decision{}, err
	}
	for i, it := range items {
		if err := validateDecide(it); err != nil {
			return store.Decision{}, fmt.Errorf("item %d: %w", i, err)
		}
	}
	groups := bySlot(len(items), func(i int) int { return s.itemSlot(items[i]) })
	if len(groups) <= 1 {
		return s.runDecide(ctx, items, nil)
	}
	d, _, err := s.decideGroups(ctx, items, groups)
	return d, err
}

// entryErr is what a decision returns without running: ErrLate for a
// fail-closed ctx already past its deadline, ctx's error when done.
func entryErr(ctx context.Context) error {
	if err := store.Late(ctx, time.Now()); err != nil {
		return err
	}
	return ctx.Err()
}

// charges are the groups a decision charged and each one's script time,
// for their compensation.
type charges struct {
	groups [][]int
	at     []int64
}

// decideGroups decides items group by group (see above). When the
// decision is admitted, c holds every group's charge; otherwise nothing
// stands charged (c is empty).
func (s *Store) decideGroups(ctx context.Context, items []store.Item, groups [][]int) (d store.Decision, c charges, err error) {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	d = store.Decision{Allowed: true, Results: make([]store.Result, len(items))}
	c.at = make([]int64, 0, len(groups))
	for g, idx := range groups {
		gd, at, err := s.runDecideAt(ctx, pick(items, idx), nil)
		if err != nil {
			s.compensate(ctx, items, d.Results, c)
			return store.Decision{}, charges{}, s.unseededAfter(ctx, items, groups, g, groupError(err, idx))
		}
		for j, i := range idx {
			d.Results[i] = gd.Results[j]
		}
		if !gd.Allowed {
			s.compensate(ctx, items, d.Results, c)
			d.Allowed = false
			s.dryRun(ctx, items, d.Results, groups, g)
			return d, charges{}, nil
		}
		c.groups, c.at = groups[:g+1], append(c.at, at)
	}
	return d, c, nil
}

// groupError is a group's error with the indexes of an UnseededError
// mapped back to the decision's items (idx).
func groupError(err error, idx []int) error {
	var ue *store.UnseededError
	if !errors.As(err, &ue) {
		return err
	}
	mapped := &store.UnseededError{Items: make([]int, len(ue.Items))}
	for j, i := range ue.Items {
		mapped.Items[j] = idx[i]
	}
	return fmt.Errorf("redis decide: %w", mapped)
}

// unseededAfter is err, the error of group g; when it is an
// UnseededError, with the unseeded items of the groups after g added (a
// dry run of each finds them), so that one seeding covers the decision.
// The groups before g were charged, so they are seeded.
func (s *Store) unseededAfter(ctx context.Context, items []store.Item, groups [][]int, g int, err error) error {
	var ue *store.UnseededError
	if !errors.As(err, &ue) || g == len(groups)-1 {
		return err
	}
	all := slices.Clone(ue.Items)
	results := make([]store.Result, len(items))
	for _, gerr := range s.dryRunGroups(ctx, items, results, groups, g+1) {
		var more *store.UnseededError
		if errors.As(gerr, &more) {
			all = append(all, more.Items...)
		}
	}
	slices.Sort(all)
	return fmt.Errorf("redis decide: %w", &store.UnseededError{Items: all})
}

// compensate refunds what the groups of c charged (refunds: each allowed
// item's hits, its FromPurchased back to the balance, a fixed window's
// only within the window charged). It runs to its own deadline even when
// ctx is done; a failure leaves the charge standing (an over-charge).
func (s *Store) compensate(ctx context.Context, items []store.Item, results []store.Result, c charges) {
	var adj []store.Adjustment
	for g, idx := range c.groups {
		adj = refunds(adj, pick(items, idx), pick(results, idx), c.at[g])
	}
	if len(adj) == 0 {
		return
	}
	cctx, cancel := s.pastCaller()
	defer cancel()
	_ = s.Adjust(cctx, adj)
}

// dryRun fills the results of every group but refused with what its
// items would get now, charging nothing: each group's call carries one
// more item in its slot that never fits (more hits than its limit), so the
// script refuses and writes nothing. The groups run concurrently. The
// refusal stands whatever they answer: a group that fails (its node down,
// a pool unseeded) keeps the results it had, or none (allowed, nothing
// remaining) if it never ran.
func (s *Store) dryRun(ctx context.Context, items []store.Item, results []store.Result, groups [][]int, refused int) {
	errs := s.dryRunGroups(ctx, items, results, groups, 0, refused)
	for g, err := range errs {
		if err == nil || g <= refused {
			continue
		}
		for _, i := range groups[g] {
			results[i] = store.Result{Allowed: true}
		}
	}
}

// dryRunGroups is dryRun of the groups from first on but those in skip;
// it returns each group's error.
func (s *Store) dryRunGroups(ctx context.Context, items []store.Item, results []store.Result, groups [][]int, first int, skip ...int) []error {
	cctx, cancel := s.pastCaller()
	defer cancel()
	errs := make([]error, len(groups))
	var wg sync.WaitGroup
	for g, idx := range groups {
		if g < first || slices.Contains(skip, g) {
			continue
		}
		wg.Go(func() {
			probe := store.Item{Key: s.probeKey(items[idx[0]]), Algorithm: store.GCRA, Limit: 1, Period: 1, Hits: 2}
			gd, err := s.runDecide(cctx, append(pick(items, idx), probe), nil)
			if err != nil {
				errs[g] = groupError(err, idx)
				return
			}
			for j, i := range idx {
				results[i] = gd.Results[j]
				results[i].FromPurchased = 0
			}
		})
	}
	wg.Wait()
	return errs
}

// probeKey is an item key whose GCRA bucket key is in it's slot: it's
// hash tag's content, which holds no '}'.
func (s *Store) probeKey(it store.Item) string {
	k := s.key(it)
	if it.Key == "" {
		k = s.balanceKey(it)
	}
	i := len(s.prefix)
	for k[i] != '{' {
		i++
	}
	j := i + 1
	for k[j] != '}' {
		j++
	}
	return k[i+1 : j]
}

// decideReserveBySlot is DecideReserve on a cluster: the decision (by
// slot), then, when it admits, the record opened with reserve.lua under
// the "{rx}" tag. An id already held is ErrReservationExists after the
// decision's charges were compensated. Any other failure to open leaves
// the charges standing, as the record may have been stored.
func (s *Store) decideReserveBySlot(ctx context.Context, items []store.Item, id string, rec []byte, ttl time.Duration) (store.Decision, error) {
	if err := entryErr(ctx); err != nil {
		return store.Decision{}, err
	}
	for i, it := range items {
		if err := validateDecide(it); err != nil {
			return store.Decision{}, fmt.Errorf("item %d: %w", i, err)
		}
	}
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	groups := bySlot(len(items), func(i int) int { return s.itemSlot(items[i]) })
	// An id already held charges nothing, as on one Redis (where the
	// script checks it first); one taken between this check and the open
	// is compensated below.
	if n, err := s.c.Exists(ctx, s.recordKey(id)).Result(); err != nil {
		return store.Decision{}, fmt.Errorf("redis decide reserve: %w", err)
	} else if n > 0 {
		return store.Decision{}, store.ErrReservationExists
	}
	d, charged, err := s.decideGroups(ctx, items, groups)
	if err != nil || !d.Allowed {
		return d, err
	}
	full := store.ReservedRecord(rec, d.Results)
	switch err := s.openCharged(ctx, id, full, ttl); {
	case errors.Is(err, store.ErrReservationExists):
		s.compensate(ctx, items, d.Results, charged)
		return store.Decision{}, store.ErrReservationExists
	case err != nil:
		// Without a record nothing would ever settle the charges: they are
		// refunded once no record is left (one whose write landed without
		// an answer is taken first).
		if s.dropRecord(ctx, id) {
			s.compensate(ctx, items, d.Results, charged)
		}
		return store.Decision{}, fmt.Errorf("redis decide reserve: %w", err)
	}
	if err := store.Late(ctx, time.Now()); err != nil {
		// Opened past a fail-closed deadline (the open was retried): the
		// caller refuses the request, so neither record nor charge stays.
		if s.dropRecord(ctx, id) {
			s.compensate(ctx, items, d.Results, charged)
		}
		return store.Decision{}, err
	}
	return d, nil
}

// dropRecord takes id's record, if there is one, so that no settlement or
// expiry charges it: true when none is left. When the take fails the
// record may stand, and with it the charges (an over-charge its expiry
// records at the estimate, never a refund of something charged).
func (s *Store) dropRecord(ctx context.Context, id string) bool {
	cctx, cancel := s.pastCaller()
	defer cancel()
	_, _, err := s.TakeReservation(cctx, id, newNonce())
	return err == nil
}

// openCharged opens the record of a decision that charged: on ctx, then,
// when that fails otherwise than by a held id, once more past the
// caller's deadline (the charges stand either way). A held id whose record
// is rec is the first attempt's: opened.
func (s *Store) openCharged(ctx context.Context, id string, rec []byte, ttl time.Duration) error {
	err := s.OpenReservation(ctx, id, rec, ttl)
	if err == nil || errors.Is(err, store.ErrReservationExists) {
		return err
	}
	cctx, cancel := s.pastCaller()
	defer cancel()
	err = s.OpenReservation(cctx, id, rec, ttl)
	if !errors.Is(err, store.ErrReservationExists) {
		return err
	}
	got, gerr := s.settle.Get(cctx, s.recordKey(id)).Bytes()
	if gerr == nil && bytes.Equal(got, rec) {
		return nil
	}
	return err
}
