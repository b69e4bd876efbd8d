package ledger

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
)

// ErrInvalid: a value the record refuses (a text field too long, not UTF-8
// or with a NUL byte, an id that is not a UUID where one is required, an
// unknown scope, kind or status, a payload that is not JSON). Nothing is
// written.
var ErrInvalid = errors.New("invalid")

// The bounds on text fields, in bytes. Every implementation refuses longer
// values with ErrInvalid before it writes anything, so a database never
// sees them.
const (
	MaxIDLen       = 128 // usage, user, organisation, subject and event ids, event keys
	MaxNameLen     = 64  // provider, tier, event type
	MaxIdemKeyLen  = 100 // a saga's idempotency key
	MaxReasonLen   = 512 // a FAILED saga's reason: longer ones are truncated, not refused
	maxPayloadSize = 64 << 10
)

// text checks one text field: at most max bytes, valid UTF-8, no NUL (which
// PostgreSQL's text refuses); empty only when optional.
func text(field, v string, max int, optional bool) error {
	switch {
	case v == "" && !optional:
		return fmt.Errorf("%s is empty: %w", field, ErrInvalid)
	case len(v) > max:
		return fmt.Errorf("%s is %d bytes, at most %d: %w", field, len(v), max, ErrInvalid)
	case !utf8.ValidString(v):
		return fmt.Errorf("%s is not UTF-8: %w", field, ErrInvalid)
	}
	for i := 0; i < len(v); i++ {
		if v[i] == 0 {
			return fmt.Errorf("%s contains a NUL byte: %w", field, ErrInvalid)
		}
	}
	return nil
}

// validUUID reports whether id is a UUID in its canonical textual form.
func validUUID(id string) bool {
	u, err := uuid.Parse(id)
	return err == nil && u.String() == id
}

// Validate checks p's fields against the bounds; the scope is user or org.
func (p Pool) Validate() error {
	if p.Scope != "user" && p.Scope != "org" {
		return fmt.Errorf("pool scope %q is neither user nor org: %w", p.Scope, ErrInvalid)
	}
	return errors.Join(text("pool subject", p.Subject, MaxIDLen, false),
		text("pool provider", p.Provider, MaxNameLen, false))
}

// Validate checks u: the bounds, a known kind, at most one charge per pool
// and window.
func (u Usage) Validate() error {
	errs := []error{
		text("usage id", u.ID, MaxIDLen, false),
		text("user id", u.UserID, MaxIDLen, false),
		text("org id", u.OrgID, MaxIDLen, true),
		text("provider", u.Provider, MaxNameLen, false),
		text("tier", u.Tier, MaxNameLen, true),
	}
	switch u.Kind {
	case KindConsume, KindMetered, KindExpired:
	default:
		errs = append(errs, fmt.Errorf("usage kind %q is unknown: %w", u.Kind, ErrInvalid))
	}
	type pw struct {
		p Pool
		w time.Time
	}
	seen := map[pw]bool{}
	for _, q := range u.Quotas {
		k := pw{q.Pool, q.Window.UTC()}
		if seen[k] {
			errs = append(errs, fmt.Errorf("usage charges pool %v twice: %w", q.Pool, ErrInvalid))
		}
		seen[k] = true
		errs = append(errs, q.Pool.Validate())
	}
	return errors.Join(errs...)
}

// Validate checks a saga to start: a UUID id, the bounds, tokens > 0.
func (s Saga) Validate() error {
	errs := []error{
		text("user id", s.UserID, MaxIDLen, false),
		text("idempotency key", s.IdempotencyKey, MaxIdemKeyLen, true),
		s.Pool.Validate(),
	}
	if !validUUID(s.ID) {
		errs = append(errs, fmt.Errorf("saga id %q is not a UUID: %w", s.ID, ErrInvalid))
	}
	if s.Tokens <= 0 {
		errs = append(errs, fmt.Errorf("saga tokens %d not positive: %w", s.Tokens, ErrInvalid))
	}
	return errors.Join(errs...)
}

// Validate checks an event: a UUID id, the bounds, a JSON payload of at
// most 64 KiB.
func (e Event) Validate() error {
	errs := []error{
		text("event type", e.Type, MaxNameLen, false),
		text("event key", e.Key, MaxIDLen, false),
	}
	if !validUUID(e.ID) {
		errs = append(errs, fmt.Errorf("event id %q is not a UUID: %w", e.ID, ErrInvalid))
	}
	if len(e.Payload) > maxPayloadSize || !json.Valid(e.Payload) {
		errs = append(errs, fmt.Errorf("event %s payload is not JSON of at most %d bytes: %w", e.ID, maxPayloadSize, ErrInvalid))
	}
	return errors.Join(errs...)
}

// ValidateEvents checks every event of evs.
func ValidateEvents(evs ...Event) error {
	errs := make([]error, 0, len(evs))
	for _, e := range evs {
		errs = append(errs, e.Validate())
	}
	return errors.Join(errs...)
}

// ValidStep reports whether a saga may step from from to to: STARTED →
// PAYMENT_RESERVED → TOKENS_ALLOCATED → COMPLETED, and any status that is
// not terminal → FAILED.
func ValidStep(from, to Status) bool {
	switch to {
	case StatusPaymentReserved:
		return from == StatusStarted
	case StatusTokensAllocated:
		return from == StatusPaymentReserved
	case StatusCompleted:
		return from == StatusTokensAllocated
	case StatusFailed:
		return from == StatusStarted || from == StatusPaymentReserved || from == StatusTokensAllocated
	}
	return false
}

// TruncateReason cuts r to MaxReasonLen bytes at a rune boundary and
// replaces bytes PostgreSQL's text refuses (NUL, invalid UTF-8).
func TruncateReason(r string) string {
	r = strings.ToValidUTF8(strings.ReplaceAll(r, "\x00", ""), "\uFFFD")
	if len(r) <= MaxReasonLen {
		return r
	}
	cut := MaxReasonLen
	for cut > 0 && !utf8.RuneStart(r[cut]) {
		cut--
	}
	return r[:cut]
}
