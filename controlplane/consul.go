package controlplane

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/leakytokens/leaky/controlplane/model"
	"github.com/leakytokens/leaky/internal/policy"
	"github.com/leakytokens/leaky/internal/serve"
)

// Catalog follows the healthy instances of services (Consul's catalog,
// through controlplane/consul.WatchServices).
type Catalog interface {
	// WatchServices reports the healthy endpoints of every name, the whole
	// map each time one changes (an empty list: no healthy instance), or an
	// error, until ctx ends; it returns when ctx ends.
	WatchServices(ctx context.Context, names []string, report func(map[string][]model.Endpoint, error))
}

// KV holds the policy in one key (Consul's KV store, through
// controlplane/consul.WatchKey and PutKeyCAS).
type KV interface {
	// WatchKey reports the key's value and ModifyIndex at every change
	// (exists false when the key is absent), or an error, until ctx ends;
	// it returns when ctx ends.
	WatchKey(ctx context.Context, key string, report func(value []byte, modifyIndex uint64, exists bool, err error))
	// PutKeyCAS writes value if the key's ModifyIndex is still
	// modifyIndex (0: only if absent); ok false when it is not.
	PutKeyCAS(ctx context.Context, key string, value []byte, modifyIndex uint64) (ok bool, err error)
}

// catalogNames are the services the catalog is asked for: every service
// (the control plane's own HTTP listener among them, as a process that
// pins it without Consul has it) and every provider of the policy in
// effect, less those pinned by flags.
func (s *Server) catalogNames() []string {
	names := []string{model.ServiceAuthzGRPC, model.ServiceAuthzHTTP, model.ServiceRatelimitGRPC,
		model.ServiceRatelimitHTTP, model.ServiceAnalyticsHTTP, model.ServiceControlplaneHTTP}
	if cfg := s.pipeline.state().Config; cfg != nil {
		for p := range cfg.Policy().Providers {
			names = append(names, model.ProviderService(p))
		}
	}
	names = slices.DeleteFunc(names, func(n string) bool { _, ok := s.pinned[n]; return ok })
	slices.Sort(names)
	return names
}

// watchCatalog follows the catalog until ctx ends, starting the watch
// again whenever the policy's providers change the services to follow.
func (s *Server) watchCatalog(ctx context.Context) {
	for ctx.Err() == nil {
		names := s.catalogNames()
		wctx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() {
			defer close(done)
			rewatch(wctx, func(rctx context.Context, failed func()) {
				s.catalog.WatchServices(rctx, names, func(eps map[string][]model.Endpoint, err error) {
					switch {
					case rctx.Err() != nil: // a late report of a watch being replaced
					case err != nil:
						s.pipeline.catalogFailed(err)
						failed()
					default:
						s.pipeline.setEndpoints(eps)
					}
				})
			})
		}()
		for ctx.Err() == nil && slices.Equal(names, s.catalogNames()) {
			select {
			case <-ctx.Done():
			case <-s.pipeline.changes():
			}
		}
		cancel()
		<-done
		if gone := slices.DeleteFunc(names, func(n string) bool { return slices.Contains(s.catalogNames(), n) }); len(gone) > 0 {
			s.pipeline.dropServices(gone)
		}
	}
}

// The delays before a watch is started again after an error: doubling
// from rewatchMin to rewatchMax while the errors go on.
const (
	rewatchMin = 200 * time.Millisecond
	rewatchMax = 5 * time.Second
)

// rewatch runs watch until ctx ends, and starts it again after each error
// it reports (failed): a Consul watcher reports a state again only when it
// changed, so one that recovered from an error with nothing changed would
// never say so; a fresh watcher reports the first state it reads, which
// tells the pipeline the source is well again. watch must return once its
// ctx ends; the delay before a restart doubles while the restarts fail at
// once, and starts over after a watch that ran for rewatchMax.
func rewatch(ctx context.Context, watch func(ctx context.Context, failed func())) {
	delay := rewatchMin
	for ctx.Err() == nil {
		wctx, cancel := context.WithCancel(ctx)
		started := time.Now()
		watch(wctx, cancel)
		cancel()
		if ctx.Err() != nil {
			return
		}
		if time.Since(started) >= rewatchMax {
			delay = rewatchMin
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
		case <-t.C:
		}
		t.Stop()
		delay = min(2*delay, rewatchMax)
	}
}

// kvSource is the policy in one Consul KV key. The watch is also the
// read: a PUT edits the value the watch last saw and writes it with CAS on
// its ModifyIndex. An absent key is seeded (CAS 0) with the policy in
// effect, or at first with the -policy file's text, so that a Consul agent
// that lost its data gets the policy back.
type kvSource struct {
	kv   KV
	key  string
	seed []byte
	log  *slog.Logger

	mu      sync.Mutex
	value   []byte
	index   uint64
	exists  bool
	applied []byte // the text last handed to apply
}

func newKVSource(kv KV, key string, seed []byte, log *slog.Logger) *kvSource {
	return &kvSource{kv: kv, key: key, seed: seed, log: log}
}

func (s *kvSource) name() string { return "consul" }

func (s *kvSource) refresh() {} // a blocking query returns at the change

// watch follows the key (through rewatch: a recovery is reported) and
// applies each valid value.
func (s *kvSource) watch(ctx context.Context, apply func(*policy.Snapshot), fail func(error)) {
	rewatch(ctx, func(ctx context.Context, failed func()) {
		s.kv.WatchKey(ctx, s.key, func(value []byte, index uint64, exists bool, err error) {
			if ctx.Err() != nil {
				return
			}
			if err != nil {
				fail(err)
				failed()
				return
			}
			s.report(ctx, value, index, exists, apply, fail)
		})
	})
}

// report handles one state of the key: an absent key is seeded, a value
// other than the one applied is validated and applied.
func (s *kvSource) report(ctx context.Context, value []byte, index uint64, exists bool, apply func(*policy.Snapshot), fail func(error)) {
	s.mu.Lock()
	s.value, s.index, s.exists = value, index, exists
	seed, applied := s.seed, s.applied
	if applied != nil {
		seed = applied
	}
	s.mu.Unlock()
	if !exists {
		s.plant(ctx, seed, fail)
		return
	}
	if applied != nil && string(applied) == string(value) {
		fail(nil) // well again, or a change undone
		return
	}
	snap, err := policy.FromContents(s.name(), map[string][]byte{s.key: value})
	if err != nil {
		fail(err)
		return
	}
	s.mu.Lock()
	s.applied = value
	s.mu.Unlock()
	apply(snap)
}

// plant writes text to the absent key; losing the race to another writer
// is fine, the watch then reports its value.
func (s *kvSource) plant(ctx context.Context, text []byte, fail func(error)) {
	ok, err := s.kv.PutKeyCAS(ctx, s.key, text, 0)
	switch {
	case err != nil:
		fail(fmt.Errorf("consul key %s: absent, and seeding it failed: %w", s.key, err))
	case ok:
		s.log.Info("policy key was absent: seeded", serve.KeyPath, s.key, "bytes", len(text))
	}
}

func (s *kvSource) read(context.Context) (current, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.exists {
		return current{}, fmt.Errorf("consul key %s has not been read yet", s.key)
	}
	return current{files: map[string][]byte{s.key: slices.Clone(s.value)}, policyName: s.key, rev: s.index}, nil
}

func (s *kvSource) write(ctx context.Context, c current, data []byte) error {
	ok, err := s.kv.PutKeyCAS(ctx, s.key, data, c.rev)
	if err != nil {
		return fmt.Errorf("consul key %s: %w", s.key, err)
	}
	if !ok {
		return errConflict
	}
	return nil
}
