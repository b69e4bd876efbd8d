package ratelimit

import (
	"context"
	"log/slog"
	"time"

	"github.com/leakytokens/leaky/internal/serve"
	"github.com/leakytokens/leaky/ratelimit/ledger"
)

// recordTries is how many times a settlement's write to the ledger is
// tried before it is logged as lost.
const recordTries = 4

// recordSettlement writes st to the ledger as a ledger.Usage with its
// event (the Reservations' recorder). A failed write is retried with
// backoff, then logged: the store side is already applied, so what the
// ledger may miss is bounded by the settlements whose writes fail or are
// in flight at a crash.
func (s *Service) recordSettlement(ctx context.Context, st Settlement) {
	rec := s.record
	if rec == nil {
		return
	}
	u := ledger.Usage{
		ID: st.ID, Kind: st.Kind, UserID: st.Owner.UserID, OrgID: st.Owner.OrgID, Provider: st.Owner.Provider,
		Tier: st.Owner.Tier, Estimate: st.Estimate, Actual: st.Actual, Quotas: st.Quotas, At: st.At.UTC(),
	}
	ev := ledger.NewUsageEvent(ledger.NewID(), u)
	ctx = context.WithoutCancel(ctx)
	delay := 50 * time.Millisecond
	var err error
	for try := range recordTries {
		if try > 0 {
			_ = sleepCtx(ctx, jitter(delay))
			delay *= 2
		}
		wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, err = rec.RecordUsage(wctx, u, ev)
		cancel()
		if err == nil {
			return
		}
	}
	s.log.LogAttrs(ctx, slog.LevelError, "ledger: usage not recorded",
		slog.String("usage_id", u.ID), slog.Int64("actual", u.Actual), slog.String(serve.KeyError, err.Error()))
}

// purchaseEvent is the outbox event of saga s reaching status (with
// reason) at at: ledger.NewPurchaseEvent of the saga as that step leaves
// it.
func purchaseEvent(id string, s ledger.Saga, status ledger.Status, reason string, at time.Time) ledger.Event {
	s.Status, s.Reason, s.UpdatedAt = status, reason, at
	return ledger.NewPurchaseEvent(id, s)
}
