package ledger_test

import (
	"context"
	"testing"

	"github.com/leakytokens/leaky/ratelimit/ledger"
	"github.com/leakytokens/leaky/ratelimit/ledger/ledgertest"
)

func TestMemoryContract(t *testing.T) {
	ledgertest.Run(t, func(*testing.T) ledger.Ledger { return ledger.NewMemory(ledger.MemoryOptions{}) })
}

// TestMemoryUsageIDBound: a Memory remembers the MaxUsageIDs most recent
// usage ids; an older one is recorded again (the documented bound).
func TestMemoryUsageIDBound(t *testing.T) {
	m := ledger.NewMemory(ledger.MemoryOptions{MaxUsageIDs: 2})
	ctx := context.Background()
	rec := func(id string) bool {
		u := ledgertest.Usage(id, "u1", "", ledgertest.W1, 1, 0)
		ok, err := m.RecordUsage(ctx, u, ledger.NewUsageEvent("", u))
		if err != nil {
			t.Fatalf("RecordUsage(%s) = %v", id, err)
		}
		return ok
	}
	for i, tc := range []struct {
		id   string
		want bool
	}{{"a", true}, {"b", true}, {"a", false}, {"c", true}, {"b", false}, {"a", true}, {"c", false}} {
		if got := rec(tc.id); got != tc.want {
			t.Errorf("#%d RecordUsage(%s) = %v, want %v", i, tc.id, got, tc.want)
		}
	}
}
