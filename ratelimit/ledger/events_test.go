package ledger_test

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/leakytokens/leaky/ratelimit/ledger"
)

var (
	at     = time.Date(2026, 3, 29, 1, 30, 0, 123456789, time.FixedZone("CET", 3600))
	window = time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	evID   = "5d0c2b5e-8a34-4a51-9f61-3c1f0e3c2a10"
	sagaID = "0b7c6d8e-1f2a-4b3c-8d4e-5f6a7b8c9d0e"
)

func decode(t *testing.T, b []byte) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("payload %s is not JSON: %v", b, err)
	}
	return m
}

func TestNewUsageEvent(t *testing.T) {
	base := ledger.Usage{
		ID: "req-1", UserID: "u1", Provider: "openai", Tier: "free", Estimate: 100, Actual: 80, At: at,
		Quotas: []ledger.QuotaCharge{{Pool: ledger.Pool{Scope: "user", Subject: "u1", Provider: "openai"}, Window: window, FromWindow: 60, FromPurchased: 20}},
	}
	for _, tc := range []struct {
		name            string
		kind            ledger.Kind
		org             string
		wantType, wantK string
	}{
		{"consume keyed by user", ledger.KindConsume, "", ledger.TypeUsage, "u1"},
		{"consume keyed by org", ledger.KindConsume, "o1", ledger.TypeUsage, "o1"},
		{"metered", ledger.KindMetered, "", ledger.TypeReservationSettled, "u1"},
		{"expired with org", ledger.KindExpired, "o1", ledger.TypeReservationSettled, "o1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u := base
			u.Kind, u.OrgID = tc.kind, tc.org
			ev := ledger.NewUsageEvent(evID, u)
			wantAt := time.Date(2026, 3, 29, 0, 30, 0, 123456000, time.UTC)
			if ev.ID != evID || ev.Type != tc.wantType || ev.Key != tc.wantK || ev.Schema != 1 || !ev.OccurredAt.Equal(wantAt) || ev.OccurredAt.Location() != time.UTC {
				t.Errorf("NewUsageEvent() = %+v, want id %s type %s key %s schema 1 at %v UTC", ev, evID, tc.wantType, tc.wantK, wantAt)
			}
			want := map[string]any{
				"eventId": evID, "type": tc.wantType, "occurredAt": "2026-03-29T00:30:00.123456Z",
				"usageId": "req-1", "kind": string(tc.kind), "userId": "u1", "orgId": tc.org,
				"provider": "openai", "tier": "free", "estimate": 100.0, "actual": 80.0,
				"quotas": []any{map[string]any{"scope": "user", "subject": "u1", "provider": "openai",
					"window": "2026-03-01T00:00:00Z", "fromWindow": 60.0, "fromPurchased": 20.0}},
			}
			if diff := cmp.Diff(want, decode(t, ev.Payload)); diff != "" {
				t.Errorf("payload (-want +got):\n%s", diff)
			}
			if err := ev.Validate(); err != nil {
				t.Errorf("Validate() = %v, want nil", err)
			}
		})
	}
}

func TestNewUsageEventNoQuotasNoID(t *testing.T) {
	ev := ledger.NewUsageEvent("", ledger.Usage{ID: "r", Kind: ledger.KindMetered, UserID: "u", Provider: "p"})
	if err := ev.Validate(); err != nil {
		t.Fatalf("Validate() = %v, want a fresh UUID and valid payload", err)
	}
	if q, ok := decode(t, ev.Payload)["quotas"].([]any); !ok || len(q) != 0 {
		t.Errorf("quotas = %v, want []", decode(t, ev.Payload)["quotas"])
	}
	if ev.OccurredAt.IsZero() {
		t.Error("OccurredAt is zero, want now")
	}
	if other := ledger.NewUsageEvent("", ledger.Usage{}); other.ID == ev.ID {
		t.Errorf("two events got the same id %s", ev.ID)
	}
}

func TestNewPurchaseEvent(t *testing.T) {
	s := ledger.Saga{
		ID: sagaID, UserID: "u1", Pool: ledger.Pool{Scope: "org", Subject: "o1", Provider: "gemini"},
		Tokens: 5000, WindowOnly: true, Window: window, Status: ledger.StatusFailed, Reason: "payment declined",
		CreatedAt: window, UpdatedAt: at,
	}
	ev := ledger.NewPurchaseEvent(evID, s)
	if ev.Type != ledger.TypePurchase || ev.Key != "o1" || !ev.OccurredAt.Equal(at.Truncate(time.Microsecond)) {
		t.Errorf("NewPurchaseEvent() = %+v, want type purchase, key o1, at %v", ev, at)
	}
	want := map[string]any{
		"eventId": evID, "type": "purchase", "occurredAt": "2026-03-29T00:30:00.123456Z",
		"sagaId": sagaID, "userId": "u1", "scope": "org", "subject": "o1", "provider": "gemini",
		"tokens": 5000.0, "windowOnly": true, "status": "FAILED", "reason": "payment declined",
	}
	if diff := cmp.Diff(want, decode(t, ev.Payload)); diff != "" {
		t.Errorf("payload (-want +got):\n%s", diff)
	}
	s.UpdatedAt = time.Time{}
	if ev := ledger.NewPurchaseEvent(evID, s); !ev.OccurredAt.Equal(window) {
		t.Errorf("without UpdatedAt OccurredAt = %v, want CreatedAt %v", ev.OccurredAt, window)
	}
}
