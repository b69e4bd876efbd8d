package store_test

import (
	"testing"

	"github.com/leakytokens/leaky/authz/store"
	"github.com/leakytokens/leaky/authz/storetest"
)

func TestMemoryContract(t *testing.T) {
	storetest.Run(t, func(*testing.T) store.Store { return store.NewMemory() })
}
