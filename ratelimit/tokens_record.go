package ratelimit

import (
	"context"
	"encoding/json"
	"log/slog"
	"time"

	"github.com/google/uuid"

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
	ev := usageEvent(uuid.NewString(), u)
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

// usageEvent is the outbox event of u (schema 1 of the shared spec). It
// stands in for ledger.NewUsageEvent, which the coordinator may swap in.
func usageEvent(id string, u ledger.Usage) ledger.Event {
	typ := ledger.TypeReservationSettled
	if u.Kind == ledger.KindConsume {
		typ = ledger.TypeUsage
	}
	type quota struct {
		Scope         string    `json:"scope"`
		Subject       string    `json:"subject"`
		Provider      string    `json:"provider"`
		Window        time.Time `json:"window"`
		FromWindow    int64     `json:"fromWindow"`
		FromPurchased int64     `json:"fromPurchased"`
	}
	qs := make([]quota, 0, len(u.Quotas))
	for _, q := range u.Quotas {
		qs = append(qs, quota{q.Pool.Scope, q.Pool.Subject, q.Pool.Provider, q.Window.UTC(), q.FromWindow, q.FromPurchased})
	}
	at := u.At.UTC()
	payload, _ := json.Marshal(struct {
		EventID    string      `json:"eventId"`
		Type       string      `json:"type"`
		OccurredAt time.Time   `json:"occurredAt"`
		UsageID    string      `json:"usageId"`
		Kind       ledger.Kind `json:"kind"`
		UserID     string      `json:"userId"`
		OrgID      string      `json:"orgId"`
		Provider   string      `json:"provider"`
		Tier       string      `json:"tier"`
		Estimate   int64       `json:"estimate"`
		Actual     int64       `json:"actual"`
		Quotas     []quota     `json:"quotas"`
	}{id, typ, at, u.ID, u.Kind, u.UserID, u.OrgID, u.Provider, u.Tier, u.Estimate, u.Actual, qs})
	key := u.UserID
	if u.OrgID != "" {
		key = u.OrgID
	}
	return ledger.Event{ID: id, Type: typ, Key: key, Schema: 1, OccurredAt: at, Payload: payload}
}

// purchaseEvent is the outbox event of saga s reaching status (schema 1);
// it stands in for ledger.NewPurchaseEvent.
func purchaseEvent(id string, s ledger.Saga, status ledger.Status, reason string, at time.Time) ledger.Event {
	at = at.UTC()
	payload, _ := json.Marshal(struct {
		EventID    string        `json:"eventId"`
		Type       string        `json:"type"`
		OccurredAt time.Time     `json:"occurredAt"`
		SagaID     string        `json:"sagaId"`
		UserID     string        `json:"userId"`
		Scope      string        `json:"scope"`
		Subject    string        `json:"subject"`
		Provider   string        `json:"provider"`
		Tokens     int64         `json:"tokens"`
		WindowOnly bool          `json:"windowOnly"`
		Status     ledger.Status `json:"status"`
		Reason     string        `json:"reason"`
	}{id, ledger.TypePurchase, at, s.ID, s.UserID, s.Pool.Scope, s.Pool.Subject, s.Pool.Provider, s.Tokens, s.WindowOnly, status, reason})
	return ledger.Event{ID: id, Type: ledger.TypePurchase, Key: s.Pool.Subject, Schema: 1, OccurredAt: at, Payload: payload}
}
