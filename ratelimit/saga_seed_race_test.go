package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/leakytokens/leaky/ratelimit/ledger"
	"github.com/leakytokens/leaky/ratelimit/store"
)

// pausingSeeder is a store whose first Seed tells paused and waits for
// release before it seeds: a consume's seed stopped between its ledger
// read and its Seed.
type pausingSeeder struct {
	store.Store
	sd              store.Seeder
	once            sync.Once
	paused, release chan struct{}
}

func (p *pausingSeeder) Generations(ctx context.Context, items []store.Item) ([]int64, error) {
	return p.sd.Generations(ctx, items)
}

func (p *pausingSeeder) Seed(ctx context.Context, seeds []store.Seed) error {
	p.once.Do(func() {
		close(p.paused)
		<-p.release
	})
	return p.sd.Seed(ctx, seeds)
}

// A consume's seed racing a purchase: the consume reads the ledger (no
// purchase yet) and stops before its Seed; the purchase completes, its
// credit finding the pool unseeded; then the seed goes on. The balance
// holds the purchase, once.
func TestSagaCreditRacingSeed(t *testing.T) {
	for _, sk := range creditStoreKinds {
		for _, lk := range ledgerKinds {
			t.Run(sk+"/"+lk, func(t *testing.T) {
				e := newCreditEnv(t, sk, lk)
				ps := &pausingSeeder{Store: e.st, sd: e.st.(store.Seeder), paused: make(chan struct{}), release: make(chan struct{})}
				e.svc.store = ps
				user := uuid.NewString()
				q := e.plan(user, "free", 10)
				done := make(chan error, 1)
				var remaining int64
				go func() {
					ctx := context.Background()
					items := []store.Item{q.item}
					dec, err := e.svc.decideSeeded(ctx, items, []*quotaPlan{q}, func() (store.Decision, error) { return e.st.Decide(ctx, items) })
					if err == nil && !dec.Allowed {
						err = fmt.Errorf("refused: %+v", dec)
					}
					if err == nil {
						remaining = dec.Results[0].Remaining
					}
					done <- err
				}()
				select {
				case <-ps.paused:
				case err := <-done:
					t.Fatalf("the consume ended before its seed: %v", err)
				case <-time.After(time.Minute):
					t.Fatal("the consume's seed did not start within a minute")
				}
				s := ledger.Saga{ID: uuid.NewString(), UserID: user, Pool: q.pool, Tokens: 500}
				got, err := e.p.start(context.Background(), s)
				close(ps.release)
				if err != nil || got.Status != ledger.StatusCompleted {
					t.Fatalf("purchase: %+v, %v", got, err)
				}
				if err := <-done; err != nil {
					t.Fatalf("consume: %v", err)
				}
				if want := int64(1000 - 10 + 500); remaining != want {
					t.Errorf("after the consume: remaining %d, want %d", remaining, want)
				}
				if got, want := e.consume(t, e.plan(user, "free", 0)), int64(1000-10+500); got != want {
					t.Errorf("later: remaining %d, want %d (the purchase counted once)", got, want)
				}
			})
		}
	}
}

// churningSeeder is a store on which, before every Seed, a credit finds
// the pool unseeded: every seed is stale.
type churningSeeder struct {
	store.Store
	sd    store.Seeder
	seeds int
}

func (c *churningSeeder) Generations(ctx context.Context, items []store.Item) ([]int64, error) {
	return c.sd.Generations(ctx, items)
}

func (c *churningSeeder) Seed(ctx context.Context, seeds []store.Seed) error {
	c.seeds++
	credit := store.Adjustment{Item: store.Item{Algorithm: store.Quota, Purchased: seeds[0].Item.Purchased}, Delta: -1, Once: uuid.NewString()}
	if err := c.Adjust(ctx, []store.Adjustment{credit}); err != nil {
		return err
	}
	return c.sd.Seed(ctx, seeds)
}

// A seed refused twice (credits keep finding the pool unseeded) fails the
// decision with store.ErrStaleSeed, having read the ledger twice.
func TestSeedStaleTwice(t *testing.T) {
	e := newCreditEnv(t, "memory", "memory")
	cs := &churningSeeder{Store: e.st, sd: e.st.(store.Seeder)}
	e.svc.store = cs
	q := e.plan(uuid.NewString(), "free", 10)
	ctx := context.Background()
	items := []store.Item{q.item}
	_, err := e.svc.decideSeeded(ctx, items, []*quotaPlan{q}, func() (store.Decision, error) { return e.st.Decide(ctx, items) })
	if !errors.Is(err, store.ErrStaleSeed) || cs.seeds != 2 {
		t.Fatalf("decide: %v after %d seeds, want ErrStaleSeed after 2", err, cs.seeds)
	}
}
