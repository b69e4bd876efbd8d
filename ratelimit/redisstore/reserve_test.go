package redisstore

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/leakytokens/leaky/internal/testenv"
	"github.com/leakytokens/leaky/ratelimit/store"
)

// TestSettleCallsUseCallerDeadline: with a store timeout no call can meet
// (1 ns), decisions time out, but the calls that settle reservations run
// within their caller's deadline (before, every call had the store's
// timeout, so ext_proc's 2 s settle budget had no effect).
func TestSettleCallsUseCallerDeadline(t *testing.T) {
	s := open(t, Options{URL: testenv.RedisURL(t), Prefix: testenv.Prefix(t), Timeout: time.Nanosecond})
	it := store.Item{Key: "k", Limit: 1000, Period: sec, Hits: 1}
	if _, err := s.Decide(context.Background(), []store.Item{it}); ErrorKind(err) != "timeout" {
		t.Fatalf("Decide with a 1 ns store timeout = %v, want a timeout", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := s.OpenReservation(ctx, "id", []byte("rec"), time.Minute); err != nil {
		t.Fatalf("OpenReservation within 30 s: %v", err)
	}
	for range 2 { // the second is a retry under the same nonce
		if rec, ok, err := s.TakeReservation(ctx, "id", "nonce"); err != nil || !ok || string(rec) != "rec" {
			t.Fatalf("TakeReservation within 30 s = %q, %v, %v", rec, ok, err)
		}
	}
	if err := s.Adjust(ctx, []store.Adjustment{{Item: it, Delta: -1}}); err != nil {
		t.Fatalf("Adjust within 30 s: %v", err)
	}
	if _, err := s.ClaimExpired(ctx, 10); err != nil {
		t.Fatalf("ClaimExpired within 30 s: %v", err)
	}
}

// TestDecideReserveQuotaResults: the record a DecideReserve opens carries
// what each quota item took from its purchased balance, as the decision
// reports it; a duplicate id charges neither the window nor the balance.
func TestDecideReserveQuotaResults(t *testing.T) {
	url := testenv.RedisURL(t)
	s := open(t, Options{URL: url, Prefix: testenv.Prefix(t), Timeout: 5 * time.Second})
	ctx := context.Background()
	period := int64(time.Hour / time.Microsecond)
	it := store.Item{Key: "win", Algorithm: store.Quota, Limit: 10, Period: period, Hits: 14, Purchased: "pool"}
	gc := store.Item{Key: "g", Limit: 100, Period: sec, Hits: 14}
	if err := s.Seed(ctx, []store.Seed{{Item: it, Used: 0, Purchased: 5}}); err != nil {
		t.Fatal(err)
	}
	d, err := s.DecideReserve(ctx, []store.Item{gc, it}, "r1", []byte(`{"x":1}`), time.Minute)
	if err != nil || !d.Allowed || d.Results[1].FromPurchased != 4 {
		t.Fatalf("DecideReserve = %+v, %v; want admitted, 4 from the balance", d, err)
	}
	if _, err := s.DecideReserve(ctx, []store.Item{gc, it}, "r1", []byte("dup"), time.Minute); !errors.Is(err, store.ErrReservationExists) {
		t.Fatalf("DecideReserve of a held id = %v, want ErrReservationExists", err)
	}
	rec, ok, err := s.TakeReservation(ctx, "r1", "n")
	if err != nil || !ok || string(rec) != "{\"x\":1}\n0,4" {
		t.Fatalf("TakeReservation = %q, %v, %v; want the record and results 0,4", rec, ok, err)
	}
	// Left: the window's 10 and the balance's 5, less 14 (not 28).
	it.Hits = 1
	if d, err := s.Decide(ctx, []store.Item{it}); err != nil || !d.Allowed || d.Results[0].Remaining != 0 {
		t.Errorf("Decide of the last token = %+v, %v; want admitted with 0 left", d, err)
	}
}
