package ledgertest

import (
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/leakytokens/leaky/ratelimit/ledger"
)

// testSagaStart: a saga starts STARTED; the same user and key return the
// first saga (created false, no event); another user's same key, or no
// key, start new ones; a saga id used twice is ErrConflict.
func testSagaStart(t *testing.T, l ledger.Ledger) {
	in := Saga("u1", UserPool("u1"), 100, "key-1")
	in.Status, in.Reason = ledger.StatusCompleted, "ignored"
	got, ev := start(t, l, in)
	want := in
	want.Status, want.Reason, want.UpdatedAt = ledger.StatusStarted, "", in.CreatedAt
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("StartSaga() (-want +got):\n%s", diff)
	}
	if read, err := l.Saga(Ctx(t), in.ID); err != nil || !cmp.Equal(read, got) {
		t.Errorf("Saga() = %+v, %v, want %+v", read, err, got)
	}
	replay := Saga("u1", UserPool("u1"), 999, "key-1")
	again, created, err := l.StartSaga(Ctx(t), replay, ledger.NewPurchaseEvent("", replay))
	if err != nil || created || !cmp.Equal(again, got) {
		t.Errorf("StartSaga(same user, same key) = %+v, %v, %v, want the first saga, false", again, created, err)
	}
	other, _ := start(t, l, Saga("u2", UserPool("u2"), 100, "key-1"))
	noKey1, _ := start(t, l, Saga("u1", UserPool("u1"), 100, ""))
	noKey2, _ := start(t, l, Saga("u1", UserPool("u1"), 100, ""))
	dup := Saga("u3", UserPool("u3"), 1, "")
	dup.ID = noKey1.ID
	_, _, err = l.StartSaga(Ctx(t), dup, ledger.NewPurchaseEvent("", dup))
	wantErr(t, "StartSaga(id taken)", err, ledger.ErrConflict)
	wantIDs := []string{ev.ID}
	pub := drain(t, l)
	if len(pub) != 4 || pub[0].ID != wantIDs[0] {
		t.Errorf("published %d events starting %v, want 4 starting with %v (sagas %s %s %s)", len(pub), ids(pub), wantIDs, other.ID, noKey1.ID, noKey2.ID)
	}
	if _, err := l.Saga(Ctx(t), ledger.NewID()); err == nil {
		t.Error("Saga(unknown) = nil error, want ErrNotFound")
	} else {
		wantErr(t, "Saga(unknown)", err, ledger.ErrNotFound)
	}
}

// testStepCAS: a step from the wrong status is ErrConflict and writes
// nothing; an unknown saga ErrNotFound; a step ValidStep refuses
// ErrInvalid.
func testStepCAS(t *testing.T, l ledger.Ledger) {
	s, _ := start(t, l, Saga("u1", UserPool("u1"), 100, ""))
	drain(t, l)
	next := s
	next.Status = ledger.StatusTokensAllocated
	_, err := l.StepSaga(Ctx(t), s.ID, ledger.StatusPaymentReserved, ledger.StatusTokensAllocated, "", ledger.NewPurchaseEvent("", next))
	wantErr(t, "StepSaga(wrong from)", err, ledger.ErrConflict)
	_, err = l.StepSaga(Ctx(t), ledger.NewID(), ledger.StatusStarted, ledger.StatusPaymentReserved, "", ledger.NewPurchaseEvent("", next))
	wantErr(t, "StepSaga(unknown)", err, ledger.ErrNotFound)
	_, err = l.StepSaga(Ctx(t), s.ID, ledger.StatusStarted, ledger.StatusCompleted, "", ledger.NewPurchaseEvent("", next))
	wantErr(t, "StepSaga(STARTED → COMPLETED)", err, ledger.ErrInvalid)
	if got, err := l.Saga(Ctx(t), s.ID); err != nil || !cmp.Equal(got, s) {
		t.Errorf("Saga() after refused steps = %+v, %v, want %+v unchanged", got, err, s)
	}
	if got := quota(t, l, UserPool("u1"), W1); got != [2]int64{0, 0} {
		t.Errorf("QuotaState after refused steps = %v, want [0 0]", got)
	}
	if pub := drain(t, l); len(pub) != 0 {
		t.Errorf("refused steps published %v, want nothing", ids(pub))
	}
	got := step(t, l, s, "", ledger.StatusPaymentReserved)
	if got.Status != ledger.StatusPaymentReserved || got.UpdatedAt.Before(s.UpdatedAt) {
		t.Errorf("StepSaga() = %+v, want PAYMENT_RESERVED, updated at or after %v", got, s.UpdatedAt)
	}
	if pub := drain(t, l); len(pub) != 1 {
		t.Errorf("a step published %d events, want 1", len(pub))
	}
}

// testCreditOnce: many concurrent allocations of one saga: one succeeds,
// the others are ErrConflict, the pool is credited once.
func testCreditOnce(t *testing.T, l ledger.Ledger) {
	s, _ := start(t, l, Saga("u1", UserPool("u1"), 250, ""))
	s = step(t, l, s, "", ledger.StatusPaymentReserved)
	const n = 16
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for range n {
		wg.Go(func() {
			next := s
			next.Status = ledger.StatusTokensAllocated
			_, err := l.StepSaga(Ctx(t), s.ID, ledger.StatusPaymentReserved, ledger.StatusTokensAllocated, "", ledger.NewPurchaseEvent("", next))
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	ok := 0
	for err := range errs {
		if err == nil {
			ok++
		} else {
			wantErr(t, "concurrent StepSaga", err, ledger.ErrConflict)
		}
	}
	if ok != 1 {
		t.Errorf("%d of %d concurrent allocations succeeded, want 1", ok, n)
	}
	if got := quota(t, l, UserPool("u1"), W1); got != [2]int64{0, 250} {
		t.Errorf("QuotaState after allocation = %v, want [0 250]", got)
	}
	s, _ = l.Saga(Ctx(t), s.ID)
	step(t, l, s, "", ledger.StatusCompleted)
	if got := quota(t, l, UserPool("u1"), W1); got != [2]int64{0, 250} {
		t.Errorf("QuotaState after completion = %v, want [0 250]", got)
	}
	if pub := drain(t, l); len(pub) != 4 {
		t.Errorf("published %d events, want 4 (start, three steps)", len(pub))
	}
}

// testWindowCredit: a window-only purchase adds to its window only.
func testWindowCredit(t *testing.T, l ledger.Ledger) {
	in := Saga("u1", OrgPool("o1"), 300, "")
	in.WindowOnly, in.Window = true, W2
	s, _ := start(t, l, in)
	if !s.WindowOnly || !s.Window.Equal(W2) {
		t.Errorf("StartSaga(window-only) = %+v, want WindowOnly at %v", s, W2)
	}
	step(t, l, s, "", ledger.StatusPaymentReserved, ledger.StatusTokensAllocated, ledger.StatusCompleted)
	record(t, l, Usage("r", "u1", "o1", W2, 100, 0))
	for w, want := range map[time.Time][2]int64{W1: {0, 0}, W2: {100 - 300, 0}} {
		if got := quota(t, l, OrgPool("o1"), w); got != want {
			t.Errorf("QuotaState(org, %v) = %v, want %v", w, got, want)
		}
	}
}

// testFailed: FAILED keeps the reason (cut to MaxReasonLen) and, after an
// allocation, revokes the credit; no step leaves it.
func testFailed(t *testing.T, l ledger.Ledger) {
	s, _ := start(t, l, Saga("u1", UserPool("u1"), 70, ""))
	s = step(t, l, s, "", ledger.StatusPaymentReserved, ledger.StatusTokensAllocated)
	if got := quota(t, l, UserPool("u1"), W1); got != [2]int64{0, 70} {
		t.Errorf("QuotaState after allocation = %v, want [0 70]", got)
	}
	f := step(t, l, s, "allocation lost", ledger.StatusFailed)
	if f.Reason != "allocation lost" || f.Status != ledger.StatusFailed {
		t.Errorf("StepSaga(FAILED) = %+v, want FAILED with the reason", f)
	}
	if read, err := l.Saga(Ctx(t), s.ID); err != nil || read.Reason != "allocation lost" {
		t.Errorf("Saga() = %+v, %v, want the reason kept", read, err)
	}
	if got := quota(t, l, UserPool("u1"), W1); got != [2]int64{0, 0} {
		t.Errorf("QuotaState after compensation = %v, want [0 0]", got)
	}
	_, err := l.StepSaga(Ctx(t), s.ID, ledger.StatusFailed, ledger.StatusFailed, "again")
	wantErr(t, "StepSaga(FAILED → FAILED)", err, ledger.ErrInvalid)
	long, _ := start(t, l, Saga("u1", UserPool("u1"), 1, ""))
	f = step(t, l, long, strings.Repeat("é", 600), ledger.StatusFailed)
	if len(f.Reason) > ledger.MaxReasonLen || len(f.Reason) < ledger.MaxReasonLen-1 {
		t.Errorf("a 1200-byte reason was kept as %d bytes, want cut to %d", len(f.Reason), ledger.MaxReasonLen)
	}
}

// testStale: non-terminal sagas updated before a moment, oldest first,
// bounded by limit.
func testStale(t *testing.T, l ledger.Ledger) {
	a := Saga("u1", UserPool("u1"), 1, "")
	b := Saga("u1", UserPool("u1"), 1, "")
	done := Saga("u1", UserPool("u1"), 1, "")
	b.CreatedAt, done.CreatedAt = T0.Add(time.Second), T0.Add(-time.Hour)
	sb, _ := start(t, l, b)
	sa, _ := start(t, l, a)
	sd, _ := start(t, l, done)
	step(t, l, sd, "no payment", ledger.StatusFailed)
	for _, tc := range []struct {
		before time.Time
		limit  int
		want   []string
	}{
		{T0.Add(time.Hour), 10, []string{sa.ID, sb.ID}},
		{T0.Add(time.Hour), 1, []string{sa.ID}},
		{T0.Add(time.Millisecond), 10, []string{sa.ID}},
		{T0, 10, nil},
	} {
		got, err := l.StaleSagas(Ctx(t), tc.before, tc.limit)
		if err != nil {
			t.Fatalf("StaleSagas() = %v", err)
		}
		if diff := cmp.Diff(tc.want, sagaIDs(got)); diff != "" {
			t.Errorf("StaleSagas(%v, %d) (-want +got):\n%s", tc.before, tc.limit, diff)
		}
	}
}

func sagaIDs(ss []ledger.Saga) []string {
	var out []string
	for _, s := range ss {
		out = append(out, s.ID)
	}
	return out
}
