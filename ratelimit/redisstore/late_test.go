package redisstore

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/leakytokens/leaky/internal/testenv"
	"github.com/leakytokens/leaky/ratelimit/store"
)

// remaining reads key's GCRA bucket (capacity 10, one token an hour) with
// a fresh store on prefix, after every earlier store was closed.
func remaining(t *testing.T, url, prefix, key string) int64 {
	t.Helper()
	s := open(t, Options{URL: url, Prefix: prefix, Timeout: 5 * time.Second})
	d, err := s.Decide(context.Background(), []store.Item{{Key: key, Limit: 10, Period: 3600 * sec}})
	if err != nil {
		t.Fatal(err)
	}
	return d.Results[0].Remaining
}

// A fail-closed decision that Redis runs after its deadline (all clients
// paused well past it) charges nothing, and its caller gets ErrLate: the
// script refuses it (its reply charged nothing, so no refund was made;
// without the deadline in the script it would charge once the pause ends,
// and only the abandoned-reply refund would undo it).
func TestLateDecisionChargesNothing(t *testing.T) {
	srv := testenv.StartRedis(t)
	prefix := testenv.Prefix(t)
	s, err := New(context.Background(), Options{URL: srv.URL, Prefix: prefix, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	c := raw(t, srv.URL)
	// Redis then runs nothing for 1.5 s; the decisions' deadlines are 100 ms.
	if err := c.Do(context.Background(), "CLIENT", "PAUSE", "1500", "ALL").Err(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(store.WithFailClosed(context.Background()), 100*time.Millisecond)
	defer cancel()
	it := store.Item{Key: "late", Limit: 10, Period: 3600 * sec, Hits: 3}
	if _, err := s.Decide(ctx, []store.Item{it}); !errors.Is(err, store.ErrLate) {
		t.Errorf("Decide(fail-closed, Redis paused past the deadline) = %v, want ErrLate", err)
	}
	ctx2, cancel2 := context.WithTimeout(store.WithFailClosed(context.Background()), 100*time.Millisecond)
	defer cancel2()
	if _, err := s.DecideReserve(ctx2, []store.Item{it}, "late-id", []byte("rec"), time.Minute); !errors.Is(err, store.ErrLate) {
		t.Errorf("DecideReserve(fail-closed, Redis paused past the deadline) = %v, want ErrLate", err)
	}
	s.Close() // waits for the replies, after the pause
	if got := remaining(t, srv.URL, prefix, "late"); got != 10 {
		t.Errorf("after late fail-closed decisions the bucket has %d of 10 left, want 10 (nothing charged)", got)
	}
	if got := s.refunded.Load(); got != 0 {
		t.Errorf("%d late decisions were refunded, want 0: the script should have charged nothing", got)
	}
	if got := s.LostLate(); got != 0 {
		t.Errorf("LostLate = %d, want 0", got)
	}
}

// A fail-closed decision Redis ran in time but whose caller left before
// its reply (the call is handed to the worker as abandoned) is refunded,
// and the record a reserving one opened is taken, so no expiry charges it.
func TestAbandonedChargeIsRefunded(t *testing.T) {
	url, prefix := testenv.RedisURL(t), testenv.Prefix(t)
	s := open(t, Options{URL: url, Prefix: prefix, Timeout: 5 * time.Second})
	ctx, cancel := context.WithTimeout(store.WithFailClosed(context.Background()), time.Minute)
	defer cancel()
	items := []store.Item{
		{Key: "a", Limit: 10, Period: 3600 * sec, Hits: 4},
		{Key: "b", Limit: 10, Period: 3600 * sec, Hits: 4, Algorithm: store.FixedWindow},
	}
	rsv := &reserveArgs{keys: [2]string{s.recordKey("id"), s.indexKey()}, args: [4]any{"id", []byte("rec"), time.Minute.Microseconds(), int64(1000)}}
	for _, r := range []*reserveArgs{nil, rsv} {
		c, err := s.decideCall(ctx, items, r)
		if err != nil {
			t.Fatal(err)
		}
		c.done = make(chan struct{})
		c.state.Store(callAbandoned)
		s.pipe.send([]*call{c})
		if c.err != nil || len(c.vals) == 0 || c.vals[0] != 1 {
			t.Fatalf("abandoned call: reply %v, %v; want an admitted decision", c.vals, c.err)
		}
	}
	s.pipe.refunds.Wait() // refunds run beside the workers
	d, err := s.Decide(context.Background(), []store.Item{
		{Key: "a", Limit: 10, Period: 3600 * sec},
		{Key: "b", Limit: 10, Period: 3600 * sec, Algorithm: store.FixedWindow},
	})
	if err != nil {
		t.Fatal(err)
	}
	if a, b := d.Results[0].Remaining, d.Results[1].Remaining; a != 10 || b != 10 {
		t.Errorf("after two abandoned admitted decisions: remaining %d and %d, want 10 and 10 (refunded)", a, b)
	}
	if _, ok, err := s.TakeReservation(context.Background(), "id", "test"); err != nil || ok {
		t.Errorf("TakeReservation(id) after the abandoned reservation = %v, %v; want no record", ok, err)
	}
	if got := s.LostLate(); got != 0 {
		t.Errorf("LostLate = %d, want 0", got)
	}
}

// On one machine Redis's clock and the process's are the same clock: the
// lower bound of their difference is at most 0 and within a second of it.
func TestClockOffsetIsALowerBound(t *testing.T) {
	s := open(t, Options{URL: testenv.RedisURL(t), Prefix: testenv.Prefix(t), Timeout: 5 * time.Second})
	off, ok := s.clock.lower()
	if !ok || off > 0 || off < -time.Second.Microseconds() {
		t.Errorf("clock.lower() = %d µs, %v; want in [-1 s, 0]", off, ok)
	}
}

// decide.lua itself refuses a run past its deadline: it returns {-3} and
// changes nothing, whatever the pipeline does with the reply.
func TestScriptRefusesPastDeadline(t *testing.T) {
	s := open(t, Options{URL: testenv.RedisURL(t), Prefix: testenv.Prefix(t), Timeout: 5 * time.Second})
	ctx, cancel := context.WithTimeout(store.WithFailClosed(context.Background()), time.Minute)
	defer cancel()
	it := store.Item{Key: "past", Limit: 10, Period: 3600 * sec, Hits: 3}
	for _, tc := range []struct {
		name     string
		deadline time.Duration // from now, on Redis's clock
		want     []int64       // the reply's head
		left     int64
	}{
		{"past", -time.Second, []int64{-3}, 10},
		{"live", time.Minute, []int64{1, 1, 7}, 7},
	} {
		c, err := s.decideCall(ctx, []store.Item{it}, nil)
		if err != nil {
			t.Fatal(err)
		}
		now, err := s.c.Time(context.Background()).Result()
		if err != nil {
			t.Fatal(err)
		}
		c.args[1] = now.Add(tc.deadline).UnixMicro()
		vals, err := s.decide.Run(context.Background(), s.c, c.keys, c.args...).Int64Slice()
		if err != nil || len(vals) < len(tc.want) {
			t.Fatalf("%s: decide.lua = %v, %v", tc.name, vals, err)
		}
		if got := vals[:len(tc.want)]; !slices.Equal(got, tc.want) {
			t.Errorf("%s: decide.lua reply starts %v, want %v", tc.name, got, tc.want)
		}
		d, err := s.Decide(context.Background(), []store.Item{{Key: "past", Limit: 10, Period: 3600 * sec}})
		if err != nil || d.Results[0].Remaining != tc.left {
			t.Errorf("%s: after the run the bucket has %+v (%v), want %d left", tc.name, d, err, tc.left)
		}
	}
}

// slowTime delays every TIME reply by d, as a busy machine does.
type slowTime struct{ d time.Duration }

func (slowTime) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h slowTime) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		if cmd.Name() == "time" {
			time.Sleep(h.d)
		}
		return err
	}
}
func (slowTime) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// A slow TIME read (its reply waited 20 ms for the process) bounds the
// clock 20 ms too early: it is kept only while there is nothing better,
// and the first fast read replaces it.
func TestClockKeepsFastReads(t *testing.T) {
	url := testenv.RedisURL(t)
	fast := raw(t, url)
	slow := raw(t, url)
	slow.AddHook(slowTime{20 * time.Millisecond})
	ctx := context.Background()
	var k redisClock
	if err := k.sample(ctx, slow); err != nil {
		t.Fatal(err)
	}
	if off, ok := k.lower(); !ok || off > -15_000 {
		t.Fatalf("after one slow read: bound %d µs, %v; want it kept, about -20 ms", off, ok)
	}
	for i := 0; i < 200 && k.fastSamples() == 0; i++ { // a loaded machine may need a few
		if err := k.sample(ctx, fast); err != nil {
			t.Fatal(err)
		}
	}
	if k.fastSamples() == 0 {
		t.Fatalf("no TIME read under %v in 200", clockFastRTT)
	}
	for range 4 {
		if err := k.sample(ctx, slow); err != nil {
			t.Fatal(err)
		}
	}
	// Redis and the process share this machine's clock: a fast read bounds
	// the offset within its round trip (and Redis TIME's µs truncation).
	if off, ok := k.lower(); !ok || off < -int64(clockFastRTT/time.Microsecond)-1000 {
		t.Errorf("after a fast read and slow ones: bound %d µs, %v; want within the fast read's round trip of 0", off, ok)
	}
}
