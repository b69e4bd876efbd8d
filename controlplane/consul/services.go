package consul

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/hashicorp/consul/api"

	"github.com/leakytokens/leaky/controlplane/model"
)

// WatchServices follows the healthy instances of the named services (one
// blocking query on /v1/health/service/NAME?passing per service) until ctx
// ends, and returns then.
//
// report receives the whole map, one entry per name, once every service has
// answered and again each time one service's endpoints change; a service
// with no healthy instance has an empty, non-nil list. An error (the agent
// unreachable, an unexpected answer) is reported with a nil map, naming the
// service; the watcher retries after a backoff and reports the map again
// when it has changed. Calls of report never overlap and each gets a map of
// its own; report should return promptly, since the watchers wait for it.
//
// An endpoint is the instance's service address, or its node's address when
// the service has none, with the service port; instances without a port are
// left out. Lists are sorted and free of duplicates, so equal catalogs give
// equal maps.
func WatchServices(ctx context.Context, c *api.Client, names []string, report func(map[string][]model.Endpoint, error)) {
	names = slices.Compact(slices.Sorted(slices.Values(names)))
	w := &serviceWatch{report: report, want: len(names), current: map[string][]model.Endpoint{}}
	if len(names) == 0 {
		report(map[string][]model.Endpoint{}, nil)
		<-ctx.Done()
		return
	}
	var wg sync.WaitGroup
	for _, name := range names {
		wg.Go(func() {
			poll(ctx, func(q *api.QueryOptions) (uint64, error) {
				entries, meta, err := c.Health().Service(name, "", true, q)
				if err != nil {
					return 0, err
				}
				w.update(name, endpoints(entries))
				return meta.LastIndex, nil
			}, func(err error) {
				w.fail(fmt.Errorf("consul: healthy instances of %s: %w", name, err))
			})
		})
	}
	wg.Wait()
}

// serviceWatch merges the answers of the per-service watchers.
type serviceWatch struct {
	report  func(map[string][]model.Endpoint, error)
	want    int // the number of services watched
	mu      sync.Mutex
	current map[string][]model.Endpoint // the last answer of each service that answered
}

// update records one service's endpoints and reports the map if they
// changed and every service has answered.
func (w *serviceWatch) update(name string, eps []model.Endpoint) {
	w.mu.Lock()
	defer w.mu.Unlock()
	old, seen := w.current[name]
	if seen && slices.Equal(old, eps) {
		return
	}
	w.current[name] = eps
	if len(w.current) < w.want {
		return
	}
	out := make(map[string][]model.Endpoint, len(w.current))
	for k, v := range w.current {
		out[k] = slices.Clone(v)
	}
	w.report(out, nil)
}

func (w *serviceWatch) fail(err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.report(nil, err)
}

// endpoints converts a health answer (passing instances only) into sorted,
// distinct endpoints; never nil.
func endpoints(entries []*api.ServiceEntry) []model.Endpoint {
	out := []model.Endpoint{}
	for _, e := range entries {
		if e.Service == nil || e.Service.Port <= 0 || e.Service.Port > 65535 {
			continue
		}
		host := e.Service.Address
		if host == "" && e.Node != nil {
			host = e.Node.Address
		}
		if host == "" {
			continue
		}
		out = append(out, model.Endpoint{Host: host, Port: uint32(e.Service.Port)})
	}
	slices.SortFunc(out, func(a, b model.Endpoint) int {
		if c := strings.Compare(a.Host, b.Host); c != 0 {
			return c
		}
		return int(a.Port) - int(b.Port)
	})
	return slices.Compact(out)
}
