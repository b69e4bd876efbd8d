package consul

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/hashicorp/consul/api"
)

// WatchKey follows one KV key with blocking queries until ctx ends, and
// returns then.
//
// report receives the key's first state and every change: its value and
// ModifyIndex (the index PutKeyCAS expects) when exists is true; nil, 0 and
// false while the key is absent. An error is reported with err set and the
// other arguments zero; the watcher retries after a backoff and reports the
// key again only when it differs from the last state reported. Calls of
// report never overlap; report should return promptly.
func WatchKey(ctx context.Context, c *api.Client, key string, report func(value []byte, modifyIndex uint64, exists bool, err error)) {
	var (
		reported  bool
		lastValue []byte
		lastIndex uint64
		lastFound bool
	)
	poll(ctx, func(q *api.QueryOptions) (uint64, error) {
		pair, meta, err := c.KV().Get(key, q)
		if err != nil {
			return 0, err
		}
		var value []byte
		var index uint64
		found := pair != nil
		if found {
			value, index = pair.Value, pair.ModifyIndex
			if value == nil {
				value = []byte{}
			}
		}
		if !reported || found != lastFound || index != lastIndex || !bytes.Equal(value, lastValue) {
			reported, lastValue, lastIndex, lastFound = true, value, index, found
			report(bytes.Clone(value), index, found, nil)
		}
		return meta.LastIndex, nil
	}, func(err error) {
		report(nil, 0, false, fmt.Errorf("consul: key %s: %w", key, err))
	})
}

// PutKeyCAS writes value to key if the key's ModifyIndex is still
// modifyIndex; a modifyIndex of 0 creates the key only if it is absent. ok
// is false, with a nil error, when another write came first.
func PutKeyCAS(ctx context.Context, c *api.Client, key string, value []byte, modifyIndex uint64) (ok bool, err error) {
	if key == "" || strings.HasPrefix(key, "/") {
		return false, errors.New("consul: a key must be non-empty and not begin with /")
	}
	ok, _, err = c.KV().CAS(&api.KVPair{Key: key, Value: value, ModifyIndex: modifyIndex}, (&api.WriteOptions{}).WithContext(ctx))
	if err != nil {
		return false, fmt.Errorf("consul: write key %s: %w", key, err)
	}
	return ok, nil
}
