package ledger

import (
	"encoding/json"
	"time"

	"github.com/google/uuid"
)

// SchemaVersion is the version of the event payloads built here (the
// schema-version Kafka header).
const SchemaVersion = 1

// NewID returns a random UUIDv4 in canonical form: an event or saga id.
func NewID() string { return uuid.NewString() }

// usagePayload is schema 1 of a usage or reservation-settled event.
type usagePayload struct {
	EventID    string         `json:"eventId"`
	Type       string         `json:"type"`
	OccurredAt string         `json:"occurredAt"`
	UsageID    string         `json:"usageId"`
	Kind       Kind           `json:"kind"`
	UserID     string         `json:"userId"`
	OrgID      string         `json:"orgId"`
	Provider   string         `json:"provider"`
	Tier       string         `json:"tier"`
	Estimate   int64          `json:"estimate"`
	Actual     int64          `json:"actual"`
	Quotas     []quotaPayload `json:"quotas"`
}

type quotaPayload struct {
	Scope         string `json:"scope"`
	Subject       string `json:"subject"`
	Provider      string `json:"provider"`
	Window        string `json:"window"`
	FromWindow    int64  `json:"fromWindow"`
	FromPurchased int64  `json:"fromPurchased"`
}

// purchasePayload is schema 1 of a purchase event.
type purchasePayload struct {
	EventID    string `json:"eventId"`
	Type       string `json:"type"`
	OccurredAt string `json:"occurredAt"`
	SagaID     string `json:"sagaId"`
	UserID     string `json:"userId"`
	Scope      string `json:"scope"`
	Subject    string `json:"subject"`
	Provider   string `json:"provider"`
	Tokens     int64  `json:"tokens"`
	WindowOnly bool   `json:"windowOnly"`
	Status     Status `json:"status"`
	Reason     string `json:"reason"`
}

// occurred is the event time: t in UTC at microsecond precision (what
// PostgreSQL keeps), or now when t is zero.
func occurred(t time.Time) time.Time {
	if t.IsZero() {
		t = time.Now()
	}
	return t.UTC().Truncate(time.Microsecond)
}

// NewUsageEvent returns the event of the settled usage u: type usage for a
// REST consume (KindConsume), reservation-settled for a metered or expired
// reservation; keyed by the organisation when one was charged, else by the
// user; occurred at u.At (now when zero). An empty id gets a new one.
func NewUsageEvent(id string, u Usage) Event {
	if id == "" {
		id = NewID()
	}
	typ := TypeReservationSettled
	if u.Kind == KindConsume {
		typ = TypeUsage
	}
	key := u.UserID
	if u.OrgID != "" {
		key = u.OrgID
	}
	at := occurred(u.At)
	p := usagePayload{
		EventID: id, Type: typ, OccurredAt: at.Format(time.RFC3339Nano),
		UsageID: u.ID, Kind: u.Kind, UserID: u.UserID, OrgID: u.OrgID,
		Provider: u.Provider, Tier: u.Tier, Estimate: u.Estimate, Actual: u.Actual,
		Quotas: make([]quotaPayload, 0, len(u.Quotas)),
	}
	for _, q := range u.Quotas {
		p.Quotas = append(p.Quotas, quotaPayload{
			Scope: q.Pool.Scope, Subject: q.Pool.Subject, Provider: q.Pool.Provider,
			Window:     q.Window.UTC().Format(time.RFC3339Nano),
			FromWindow: q.FromWindow, FromPurchased: q.FromPurchased,
		})
	}
	return Event{ID: id, Type: typ, Key: key, Schema: SchemaVersion, OccurredAt: at, Payload: mustJSON(p)}
}

// NewPurchaseEvent returns the event of saga s in its status s.Status
// (build it with the status a step moves to), keyed by the pool's subject,
// occurred at s.UpdatedAt (else s.CreatedAt, else now). An empty id gets a
// new one.
func NewPurchaseEvent(id string, s Saga) Event {
	if id == "" {
		id = NewID()
	}
	t := s.UpdatedAt
	if t.IsZero() {
		t = s.CreatedAt
	}
	at := occurred(t)
	p := purchasePayload{
		EventID: id, Type: TypePurchase, OccurredAt: at.Format(time.RFC3339Nano),
		SagaID: s.ID, UserID: s.UserID, Scope: s.Pool.Scope, Subject: s.Pool.Subject,
		Provider: s.Pool.Provider, Tokens: s.Tokens, WindowOnly: s.WindowOnly,
		Status: s.Status, Reason: s.Reason,
	}
	return Event{ID: id, Type: TypePurchase, Key: s.Pool.Subject, Schema: SchemaVersion, OccurredAt: at, Payload: mustJSON(p)}
}

// mustJSON marshals a payload made only of strings, numbers and booleans,
// which cannot fail (invalid UTF-8 is replaced, not refused).
func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic("ledger: marshal event payload: " + err.Error())
	}
	return b
}
