package ledgertest

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/leakytokens/leaky/ratelimit/ledger"
)

// testUsageOnce: the same usage id twice is written once, with one event.
func testUsageOnce(t *testing.T, l ledger.Ledger) {
	u := Usage("req-1", "u1", "o1", W1, 30, 0)
	first := record(t, l, u)
	again := u
	again.Actual = 999
	again.Quotas[0].FromWindow = 999
	ok, err := l.RecordUsage(Ctx(t), again, ledger.NewUsageEvent("", again))
	if err != nil || ok {
		t.Errorf("RecordUsage(same id) = %v, %v, want false, nil", ok, err)
	}
	if got := quota(t, l, UserPool("u1"), W1); got != [2]int64{30, 0} {
		t.Errorf("QuotaState(user) = %v, want [30 0] (counted once)", got)
	}
	if got := quota(t, l, OrgPool("o1"), W1); got != [2]int64{30, 0} {
		t.Errorf("QuotaState(org) = %v, want [30 0]", got)
	}
	pub := drain(t, l)
	if diff := cmp.Diff([]string{first.ID}, ids(pub)); diff != "" {
		t.Errorf("published (-want +got):\n%s", diff)
	}
	if len(pub) == 1 {
		if diff := cmp.Diff(first, pub[0], samePayload); diff != "" {
			t.Errorf("published event (-want +got):\n%s", diff)
		}
	}
}

// testQuotaState: used per pool and window (refunds included), the
// purchased balance per pool, persistent and window-only credits.
func testQuotaState(t *testing.T, l ledger.Ledger) {
	record(t, l, Usage("a", "u1", "o1", W1, 100, 0))
	record(t, l, Usage("b", "u1", "", W1, 50, 20))
	record(t, l, Usage("c", "u1", "", W1, -10, 0)) // a refund to the window
	record(t, l, Usage("d", "u1", "o1", W2, 7, 3))
	record(t, l, Usage("e", "u2", "", W1, 1, 0))
	s, _ := start(t, l, Saga("u1", UserPool("u1"), 1000, ""))
	step(t, l, s, "", ledger.StatusPaymentReserved, ledger.StatusTokensAllocated, ledger.StatusCompleted)
	w := Saga("u1", UserPool("u1"), 40, "")
	w.WindowOnly, w.Window = true, W2
	ws, _ := start(t, l, w)
	step(t, l, ws, "", ledger.StatusPaymentReserved, ledger.StatusTokensAllocated)
	org := Saga("u1", OrgPool("o1"), 500, "")
	os, _ := start(t, l, org)
	step(t, l, os, "", ledger.StatusPaymentReserved) // not allocated: no credit
	for _, tc := range []struct {
		name string
		pool ledger.Pool
		w    time.Time
		want [2]int64
	}{
		{"user W1", UserPool("u1"), W1, [2]int64{140, 1000 - 23}},
		{"user W2 minus window credit", UserPool("u1"), W2, [2]int64{7 - 40, 1000 - 23}},
		{"org W1", OrgPool("o1"), W1, [2]int64{100, -3}},
		{"org W2", OrgPool("o1"), W2, [2]int64{7, -3}},
		{"other user", UserPool("u2"), W1, [2]int64{1, 0}},
		{"other provider", ledger.Pool{Scope: "user", Subject: "u1", Provider: "gemini"}, W1, [2]int64{0, 0}},
		{"unknown pool", UserPool("nobody"), W1, [2]int64{0, 0}},
	} {
		if got := quota(t, l, tc.pool, tc.w); got != tc.want {
			t.Errorf("%s: QuotaState = %v, want %v", tc.name, got, tc.want)
		}
	}
}

// testInvalid: fields beyond the bounds are ErrInvalid and write nothing.
func testInvalid(t *testing.T, l ledger.Ledger) {
	long := func(n int) string { return strings.Repeat("x", n) }
	bad := []ledger.Usage{
		Usage(long(129), "u1", "", W1, 1, 0),
		Usage("r", long(129), "", W1, 1, 0),
		Usage("r", "u1", long(129), W1, 1, 0),
		Usage("r", "u1", "", W1, 1, 0),
		Usage("r", "u\x00", "", W1, 1, 0),
	}
	bad[3].Provider = long(65)
	for i, u := range bad {
		ok, err := l.RecordUsage(Ctx(t), u, ledger.NewUsageEvent("", Usage("r", "u1", "", W1, 1, 0)))
		if ok {
			t.Errorf("RecordUsage(bad %d) = true", i)
		}
		wantErr(t, "RecordUsage(bad usage)", err, ledger.ErrInvalid)
	}
	ev := ledger.NewUsageEvent("", Usage("r", "u1", "", W1, 1, 0))
	ev.Key = long(129)
	_, err := l.RecordUsage(Ctx(t), Usage("r", "u1", "", W1, 1, 0), ev)
	wantErr(t, "RecordUsage(event key too long)", err, ledger.ErrInvalid)
	s := Saga("u1", UserPool("u1"), 1, long(101))
	_, _, err = l.StartSaga(Ctx(t), s, ledger.NewPurchaseEvent("", s))
	wantErr(t, "StartSaga(key 101 bytes)", err, ledger.ErrInvalid)
	s = Saga("u1", UserPool("u1"), 1, "")
	s.ID = "not-a-uuid"
	_, _, err = l.StartSaga(Ctx(t), s, ledger.NewPurchaseEvent("", s))
	wantErr(t, "StartSaga(id not a UUID)", err, ledger.ErrInvalid)
	_, err = l.Saga(Ctx(t), "not-a-uuid")
	wantErr(t, "Saga(not a UUID)", err, ledger.ErrNotFound)
	_, err = l.QuotaState(Ctx(t), ledger.Pool{Scope: "user", Subject: "u1", Provider: long(65)}, W1)
	wantErr(t, "QuotaState(provider 65 bytes)", err, ledger.ErrInvalid)
	if got := quota(t, l, UserPool("u1"), W1); got != [2]int64{0, 0} {
		t.Errorf("QuotaState after refused writes = %v, want [0 0]", got)
	}
	if pub := drain(t, l); len(pub) != 0 {
		t.Errorf("refused writes published %d events, want 0", len(pub))
	}
	// The same usage, valid now, is recorded: the refusals left no trace.
	record(t, l, Usage("r", "u1", "", W1, 1, 0))
}
