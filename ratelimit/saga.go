package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/google/uuid"

	"github.com/leakytokens/leaky/internal/contract"
	"github.com/leakytokens/leaky/internal/serve"
	"github.com/leakytokens/leaky/ratelimit/ledger"
	"github.com/leakytokens/leaky/ratelimit/store"
)

// ledgerSagas is the part of the ledger the purchase saga uses.
type ledgerSagas = ledger.Sagas

// adjuster applies store adjustments: the fast path's credit.
type adjuster interface {
	Adjust(ctx context.Context, adj []store.Adjustment) error
}

// errNoLedger: purchases need the durable record.
var errNoLedger = errors.New("no ledger configured")

// statusCompensated names the compensation event of a failed saga (the
// seed's PAYMENT_RELEASE_REQUESTED): the payment reserved is released.
const statusCompensated ledger.Status = "PAYMENT_RELEASE_REQUESTED"

// purchases runs the purchase saga, STARTED → PAYMENT_RESERVED →
// TOKENS_ALLOCATED → COMPLETED (or FAILED, compensated), each step and its
// events one ledger transaction, and the recovery job that finishes or
// compensates sagas a crash left between steps. The fast path's credit
// (store Adjust, idempotent by Once "saga:"+id) follows TOKENS_ALLOCATED;
// the ledger step to TOKENS_ALLOCATED credits the durable record. A pool
// rebuilt from the ledger in between counts the credit already and marks
// that Once key applied (Service.seed), so the credit is counted once. A
// credit that finds the pool unseeded is not applied and leaves its Once
// key unset: it raises the pool's seed generation, so a rebuild that read
// the ledger before the credit was allocated is refused and reads again.
type purchases struct {
	ledger func() ledgerSagas // nil result: no ledger
	credit adjuster
	// windowCredit resolves the counter item of the window a window-only
	// saga recorded (Saga.Window); ok false when that window is over.
	windowCredit func(s ledger.Saga) (it store.Item, ok bool)
	log          *slog.Logger
	now          func() time.Time

	simulateFailure bool
	staleAfter      time.Duration
	interval        time.Duration
}

// samePurchase reports whether a and b are the same purchase request.
func samePurchase(a, b ledger.Saga) bool {
	return a.UserID == b.UserID && a.Pool == b.Pool && a.Tokens == b.Tokens && a.WindowOnly == b.WindowOnly
}

// errPurchaseConflict: the idempotency key was used with another payload.
var errPurchaseConflict = errors.New("idempotency key reuse with different payload")

// start runs a new saga for s (ID, UserID, Pool, Tokens, WindowOnly,
// Window, IdempotencyKey set) as far as it goes now. A saga of the same
// user with the same key is returned as it is (errPurchaseConflict when
// its payload differs). Errors after the saga started leave it to the
// recovery job; the saga as last written is returned with them.
func (p *purchases) start(ctx context.Context, s ledger.Saga) (ledger.Saga, error) {
	l := p.ledger()
	if l == nil {
		return ledger.Saga{}, errNoLedger
	}
	now := p.now().UTC()
	s.Status, s.CreatedAt, s.UpdatedAt = ledger.StatusStarted, now, now
	got, created, err := l.StartSaga(ctx, s, purchaseEvent(uuid.NewString(), s, ledger.StatusStarted, "", now))
	if err != nil {
		return ledger.Saga{}, fmt.Errorf("start saga: %w", err)
	}
	if !created {
		if !samePurchase(got, s) {
			return got, errPurchaseConflict
		}
		return got, nil
	}
	return p.advance(ctx, l, got)
}

// advance moves saga s on from its status to COMPLETED (or FAILED under
// simulated failure), step by step.
func (p *purchases) advance(ctx context.Context, l ledgerSagas, s ledger.Saga) (ledger.Saga, error) {
	var err error
	for !s.Status.Terminal() {
		switch s.Status {
		case ledger.StatusStarted:
			s, err = p.step(ctx, l, s, ledger.StatusPaymentReserved, "")
		case ledger.StatusPaymentReserved:
			if p.simulateFailure {
				return p.fail(ctx, l, s, "simulated failure")
			}
			s, err = p.step(ctx, l, s, ledger.StatusTokensAllocated, "")
		case ledger.StatusTokensAllocated:
			if err = p.creditStore(ctx, s); err == nil {
				s, err = p.step(ctx, l, s, ledger.StatusCompleted, "")
			}
		default:
			return s, fmt.Errorf("saga %s: unknown status %q", s.ID, s.Status)
		}
		if err != nil {
			return s, err
		}
	}
	return s, nil
}

// step moves s to status to with its event.
func (p *purchases) step(ctx context.Context, l ledgerSagas, s ledger.Saga, to ledger.Status, reason string) (ledger.Saga, error) {
	got, err := l.StepSaga(ctx, s.ID, s.Status, to, reason, purchaseEvent(uuid.NewString(), s, to, reason, p.now()))
	if err != nil {
		return s, fmt.Errorf("saga %s to %s: %w", s.ID, to, err)
	}
	return got, nil
}

// fail ends s as FAILED with its compensation event.
func (p *purchases) fail(ctx context.Context, l ledgerSagas, s ledger.Saga, reason string) (ledger.Saga, error) {
	now := p.now()
	got, err := l.StepSaga(ctx, s.ID, s.Status, ledger.StatusFailed, reason,
		purchaseEvent(uuid.NewString(), s, ledger.StatusFailed, reason, now),
		purchaseEvent(uuid.NewString(), s, statusCompensated, reason, now))
	if err != nil {
		return s, fmt.Errorf("saga %s to FAILED: %w", s.ID, err)
	}
	return got, nil
}

// sagaOnce is the Once key of saga id's credit to the fast path.
func sagaOnce(id string) string { return "saga:" + id }

// sagaOnceKeys are the Once keys of the credits of sagas ids.
func sagaOnceKeys(ids []string) []string {
	if len(ids) == 0 {
		return nil
	}
	keys := make([]string, len(ids))
	for i, id := range ids {
		keys[i] = sagaOnce(id)
	}
	return keys
}

// creditStore credits s's tokens to the fast path, once per saga (Once
// sagaOnce(id)): to the pool's purchased balance, or, for a window-only
// purchase, to the counter of the window the saga recorded (created when
// the window has none yet). A window that is over gets nothing: its
// tokens expired with it (the ledger keeps the credit on that window).
func (p *purchases) creditStore(ctx context.Context, s ledger.Saga) error {
	it := store.Item{Algorithm: store.Quota, Purchased: contract.PurchasedKey(contract.Scope(s.Pool.Scope), s.Pool.Subject, s.Pool.Provider)}
	if s.WindowOnly {
		w, ok := store.Item{}, false
		if p.windowCredit != nil {
			w, ok = p.windowCredit(s)
		}
		if !ok {
			p.log.LogAttrs(ctx, slog.LevelWarn, "saga: the window of a window-only credit is over; nothing to credit",
				slog.String("saga_id", s.ID), slog.Time("window", s.Window))
			return nil
		}
		it = w
	}
	err := p.credit.Adjust(ctx, []store.Adjustment{{Item: it, Delta: -s.Tokens, Once: sagaOnce(s.ID)}})
	if err != nil {
		return fmt.Errorf("saga %s: credit the store: %w", s.ID, err)
	}
	return nil
}

// recoverStale finishes or compensates the sagas untouched for staleAfter:
// TOKENS_ALLOCATED is credited (once) and COMPLETED; STARTED and
// PAYMENT_RESERVED are FAILED with compensation. It returns how many it
// moved. A saga another process moved meanwhile (ErrConflict) is skipped.
func (p *purchases) recoverStale(ctx context.Context) (int, error) {
	l := p.ledger()
	if l == nil {
		return 0, nil
	}
	stale, err := l.StaleSagas(ctx, p.now().Add(-p.staleAfter), 100)
	if err != nil {
		return 0, fmt.Errorf("stale sagas: %w", err)
	}
	n := 0
	for _, s := range stale {
		switch s.Status {
		case ledger.StatusTokensAllocated:
			if err = p.creditStore(ctx, s); err == nil {
				_, err = p.step(ctx, l, s, ledger.StatusCompleted, "")
			}
		case ledger.StatusStarted, ledger.StatusPaymentReserved:
			_, err = p.fail(ctx, l, s, "recovered: left "+string(s.Status)+" by a crash")
		default:
			continue
		}
		switch {
		case err == nil:
			n++
		case errors.Is(err, ledger.ErrConflict):
		default:
			p.log.LogAttrs(ctx, slog.LevelWarn, "saga recovery", slog.String("saga_id", s.ID), slog.String(serve.KeyError, err.Error()))
		}
	}
	return n, nil
}

// run recovers stale sagas every interval until ctx ends.
func (p *purchases) run(ctx context.Context) error {
	t := time.NewTicker(p.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			if _, err := p.recoverStale(ctx); err != nil {
				p.log.LogAttrs(ctx, slog.LevelWarn, "saga recovery", slog.String(serve.KeyError, err.Error()))
			}
		}
	}
}
