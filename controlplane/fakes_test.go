package controlplane

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"maps"
	"slices"
	"sync"
	"sync/atomic"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	runtimev3 "github.com/envoyproxy/go-control-plane/envoy/service/runtime/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/leakytokens/leaky/controlplane/model"
)

// fakeTranslate is a small stand-in for controlplane/translate: an EDS
// cluster and an assignment per service, and the Runtime of the spec (its
// layer {files: {name: text}}), versioned by a hash of the deterministic
// marshal. It counts its calls.
type fakeTranslate struct {
	calls atomic.Int64
	fail  atomic.Pointer[error] // when set, Translate fails with it
}

func (f *fakeTranslate) Translate(m *model.Model) (*cachev3.Snapshot, error) {
	f.calls.Add(1)
	if e := f.fail.Load(); e != nil {
		return nil, *e
	}
	if err := m.Validate(); err != nil {
		return nil, err
	}
	files := map[string]any{}
	for name, data := range m.Config.Files() {
		files[name] = string(data)
	}
	layer, err := structpb.NewStruct(map[string]any{model.RuntimeFilesField: files})
	if err != nil {
		return nil, err
	}
	res := map[resource.Type][]types.Resource{resource.RuntimeType: {&runtimev3.Runtime{Name: model.RuntimeName, Layer: layer}}}
	names := slices.Sorted(maps.Keys(m.Endpoints))
	for _, s := range model.Required(m.Config.Policy()) {
		if !slices.Contains(names, s) {
			names = append(names, s)
		}
	}
	for _, name := range names {
		res[resource.ClusterType] = append(res[resource.ClusterType], &clusterv3.Cluster{Name: name,
			ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
			EdsClusterConfig: &clusterv3.Cluster_EdsClusterConfig{ServiceName: name,
				EdsConfig: &core.ConfigSource{ConfigSourceSpecifier: &core.ConfigSource_Ads{Ads: &core.AggregatedConfigSource{}}}}})
		cla := &endpointv3.ClusterLoadAssignment{ClusterName: name, Endpoints: []*endpointv3.LocalityLbEndpoints{{}}}
		for _, e := range m.Endpoints[name] {
			cla.Endpoints[0].LbEndpoints = append(cla.Endpoints[0].LbEndpoints, &endpointv3.LbEndpoint{
				HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{Address: &core.Address{
					Address: &core.Address_SocketAddress{SocketAddress: &core.SocketAddress{Address: e.Host,
						PortSpecifier: &core.SocketAddress_PortValue{PortValue: e.Port}}}}}}})
		}
		res[resource.EndpointType] = append(res[resource.EndpointType], cla)
	}
	h := sha256.New()
	for _, typ := range slices.Sorted(maps.Keys(res)) {
		for _, r := range res[typ] {
			b, err := proto.MarshalOptions{Deterministic: true}.Marshal(r)
			if err != nil {
				return nil, err
			}
			h.Write([]byte(typ))
			h.Write(b)
		}
	}
	return cachev3.NewSnapshot(hex.EncodeToString(h.Sum(nil))[:16], res)
}

func (f *fakeTranslate) failWith(err error) {
	if err == nil {
		f.fail.Store(nil)
		return
	}
	f.fail.Store(&err)
}

// fakeKV is an in-memory KV with Consul's semantics for ModifyIndex and
// CAS, whose WatchKey reports as controlplane/consul's does (a state once,
// then changes only); it can be made to fail, and a hook can run before a
// CAS write (another writer coming first).
type fakeKV struct {
	mu        sync.Mutex
	value     []byte
	index     uint64 // the key's ModifyIndex; 0 while absent
	counter   uint64 // the store's raft index
	down      error
	changed   chan struct{}
	beforePut func(*fakeKV) // called once, unlocked, before the next PutKeyCAS
	watches   int           // WatchKey calls so far
}

func newFakeKV() *fakeKV { return &fakeKV{changed: make(chan struct{})} }

func (k *fakeKV) notify() {
	close(k.changed)
	k.changed = make(chan struct{})
}

// set writes the key as another writer would (a user's `consul kv put`).
func (k *fakeKV) set(value []byte) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.counter++
	k.value, k.index = value, k.counter
	k.notify()
}

func (k *fakeKV) setDown(err error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.down = err
	k.notify()
}

func (k *fakeKV) get() ([]byte, uint64) {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.value, k.index
}

func (k *fakeKV) WatchKey(ctx context.Context, _ string, report func([]byte, uint64, bool, error)) {
	k.mu.Lock()
	k.watches++
	k.mu.Unlock()
	var seen uint64 = ^uint64(0)
	var lastErr error
	for {
		k.mu.Lock()
		value, index, down, ch := k.value, k.index, k.down, k.changed
		k.mu.Unlock()
		switch {
		case down != nil && !errors.Is(down, lastErr):
			report(nil, 0, false, down)
			lastErr = down
		case down == nil && index != seen: // as the real watcher: a recovery with nothing changed is silent
			report(value, index, index != 0, nil)
			seen, lastErr = index, nil
		}
		select {
		case <-ctx.Done():
			return
		case <-ch:
		}
	}
}

func (k *fakeKV) PutKeyCAS(_ context.Context, _ string, value []byte, index uint64) (bool, error) {
	k.mu.Lock()
	hook := k.beforePut
	k.beforePut = nil
	k.mu.Unlock()
	if hook != nil {
		hook(k)
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.down != nil {
		return false, k.down
	}
	if k.index != index {
		return false, nil
	}
	k.counter++
	k.value, k.index = value, k.counter
	k.notify()
	return true, nil
}

// fakeCatalog reports what the test sets, to every watch open.
type fakeCatalog struct {
	mu      sync.Mutex
	eps     map[string][]model.Endpoint
	err     error
	watched []string // the names of the last watch opened
	changed chan struct{}
}

func newFakeCatalog() *fakeCatalog {
	return &fakeCatalog{eps: map[string][]model.Endpoint{}, changed: make(chan struct{})}
}

// set replaces the endpoints of name (none: no healthy instance).
func (c *fakeCatalog) set(name string, eps ...model.Endpoint) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.eps[name], c.err = eps, nil
	close(c.changed)
	c.changed = make(chan struct{})
}

func (c *fakeCatalog) setErr(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.err = err
	close(c.changed)
	c.changed = make(chan struct{})
}

func (c *fakeCatalog) names() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.watched)
}

func (c *fakeCatalog) WatchServices(ctx context.Context, names []string, report func(map[string][]model.Endpoint, error)) {
	c.mu.Lock()
	c.watched = slices.Clone(names)
	c.mu.Unlock()
	for {
		c.mu.Lock()
		out := map[string][]model.Endpoint{}
		for _, n := range names {
			out[n] = slices.Clone(c.eps[n])
		}
		err, ch := c.err, c.changed
		c.mu.Unlock()
		if err != nil {
			report(nil, err)
		} else {
			report(out, nil)
		}
		select {
		case <-ctx.Done():
			return
		case <-ch:
		}
	}
}
