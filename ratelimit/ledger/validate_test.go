package ledger_test

import (
	"errors"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/leakytokens/leaky/ratelimit/ledger"
)

func TestValidate(t *testing.T) {
	pool := ledger.Pool{Scope: "user", Subject: "u1", Provider: "openai"}
	usage := ledger.Usage{ID: "r1", Kind: ledger.KindConsume, UserID: "u1", Provider: "openai",
		Quotas: []ledger.QuotaCharge{{Pool: pool, Window: window}}}
	saga := ledger.Saga{ID: sagaID, UserID: "u1", Pool: pool, Tokens: 1, IdempotencyKey: "k"}
	ev := ledger.NewPurchaseEvent(evID, saga)
	for _, tc := range []struct {
		name  string
		check func() error
		ok    bool
	}{
		{"usage ok", usage.Validate, true},
		{"usage id at bound", func() error { u := usage; u.ID = strings.Repeat("a", 128); return u.Validate() }, true},
		{"usage id too long", func() error { u := usage; u.ID = strings.Repeat("a", 129); return u.Validate() }, false},
		{"usage id empty", func() error { u := usage; u.ID = ""; return u.Validate() }, false},
		{"provider too long", func() error { u := usage; u.Provider = strings.Repeat("p", 65); return u.Validate() }, false},
		{"user with NUL", func() error { u := usage; u.UserID = "a\x00"; return u.Validate() }, false},
		{"org not UTF-8", func() error { u := usage; u.OrgID = "\xff"; return u.Validate() }, false},
		{"unknown kind", func() error { u := usage; u.Kind = "x"; return u.Validate() }, false},
		{"same pool twice", func() error {
			u := usage
			u.Quotas = append(u.Quotas, u.Quotas[0])
			return u.Validate()
		}, false},
		{"pool scope unknown", func() error {
			u := usage
			u.Quotas = []ledger.QuotaCharge{{Pool: ledger.Pool{Scope: "provider", Subject: "x", Provider: "p"}}}
			return u.Validate()
		}, false},
		{"saga ok", saga.Validate, true},
		{"saga id not a UUID", func() error { s := saga; s.ID = "saga-1"; return s.Validate() }, false},
		{"saga key at bound", func() error { s := saga; s.IdempotencyKey = strings.Repeat("k", 100); return s.Validate() }, true},
		{"saga key too long", func() error { s := saga; s.IdempotencyKey = strings.Repeat("k", 101); return s.Validate() }, false},
		{"saga tokens 0", func() error { s := saga; s.Tokens = 0; return s.Validate() }, false},
		{"event ok", ev.Validate, true},
		{"event id not a UUID", func() error { e := ev; e.ID = "x"; return e.Validate() }, false},
		{"event payload not JSON", func() error { e := ev; e.Payload = []byte("{"); return e.Validate() }, false},
		{"event key too long", func() error { e := ev; e.Key = strings.Repeat("k", 129); return e.Validate() }, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.check()
			if tc.ok && err != nil {
				t.Errorf("Validate() = %v, want nil", err)
			}
			if !tc.ok && !errors.Is(err, ledger.ErrInvalid) {
				t.Errorf("Validate() = %v, want ErrInvalid", err)
			}
		})
	}
}

func TestValidStep(t *testing.T) {
	all := []ledger.Status{ledger.StatusStarted, ledger.StatusPaymentReserved, ledger.StatusTokensAllocated, ledger.StatusCompleted, ledger.StatusFailed}
	valid := map[[2]ledger.Status]bool{
		{ledger.StatusStarted, ledger.StatusPaymentReserved}:         true,
		{ledger.StatusPaymentReserved, ledger.StatusTokensAllocated}: true,
		{ledger.StatusTokensAllocated, ledger.StatusCompleted}:       true,
		{ledger.StatusStarted, ledger.StatusFailed}:                  true,
		{ledger.StatusPaymentReserved, ledger.StatusFailed}:          true,
		{ledger.StatusTokensAllocated, ledger.StatusFailed}:          true,
	}
	for _, from := range all {
		for _, to := range all {
			if got := ledger.ValidStep(from, to); got != valid[[2]ledger.Status{from, to}] {
				t.Errorf("ValidStep(%s, %s) = %v, want %v", from, to, got, !got)
			}
		}
	}
}

func TestTruncateReason(t *testing.T) {
	long := strings.Repeat("é", 400) // 800 bytes
	got := ledger.TruncateReason(long)
	if len(got) > ledger.MaxReasonLen || !utf8.ValidString(got) || len(got) < ledger.MaxReasonLen-1 {
		t.Errorf("TruncateReason(800 bytes) = %d bytes (valid %v), want ≤ %d, valid UTF-8", len(got), utf8.ValidString(got), ledger.MaxReasonLen)
	}
	if got := ledger.TruncateReason("a\x00b\xff"); got != "ab\uFFFD" {
		t.Errorf("TruncateReason(NUL, bad byte) = %q, want %q", got, "ab\uFFFD")
	}
}
