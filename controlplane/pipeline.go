package controlplane

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"

	"github.com/leakytokens/leaky/controlplane/model"
	"github.com/leakytokens/leaky/controlplane/translate"
	"github.com/leakytokens/leaky/internal/policy"
	"github.com/leakytokens/leaky/internal/serve"
)

// Translator turns a valid model into the snapshot every node is served
// (controlplane/translate.Translate). It must be pure: equal models give
// snapshots of equal version.
type Translator func(*model.Model) (*cachev3.Snapshot, error)

// Problem keys: each names one thing that can be wrong at a time, and the
// reason /readyz shows for it.
const (
	problemPolicy  = "policy"  // the policy source fails or holds an invalid policy
	problemCatalog = "catalog" // the endpoint source fails
	problemModel   = "model"   // the model is refused: nothing new is pushed
)

// problemService is the key of a service that lost its last instance.
func problemService(name string) string { return "service " + name }

// pipeline turns what the sources say into the one snapshot every node is
// served: sources → model → Validate → translate → SetSnapshot. A source
// that fails, or a model that is refused, leaves the last snapshot
// serving, recorded as a problem for /readyz. Safe for concurrent use.
type pipeline struct {
	translate Translator
	cache     cachev3.SnapshotCache
	listener  model.Endpoint
	log       *slog.Logger
	m         *metrics
	now       func() time.Time

	mu        sync.Mutex
	config    *policy.Snapshot
	endpoints map[string][]model.Endpoint // the last non-empty list of each service
	problems  map[string]string           // problem key → reason
	snap      *cachev3.Snapshot           // the last snapshot set
	version   string
	pushed    [sha256.Size]byte // the digest of the configuration the last snapshot set was made of
	proxyless string            // the version of the last proxyless snapshot set
	gaps      string            // the domain files last left out of RateLimitConfig, as logged
	pushedAt  time.Time
	changed   chan struct{} // closed and replaced whenever config or snap changes
}

func newPipeline(translate Translator, cache cachev3.SnapshotCache, listener model.Endpoint, m *metrics, log *slog.Logger) *pipeline {
	return &pipeline{translate: translate, cache: cache, listener: listener, m: m, log: log, now: time.Now,
		endpoints: map[string][]model.Endpoint{}, problems: map[string]string{}, changed: make(chan struct{})}
}

// setListener sets the gateway's listener address and rebuilds.
func (p *pipeline) setListener(e model.Endpoint) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.listener = e
	p.rebuild()
}

// setConfig makes s the policy and rebuilds.
func (p *pipeline) setConfig(s *policy.Snapshot) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.config = s
	p.clear(problemPolicy)
	p.notify()
	p.rebuild()
}

// policyFailed records that the policy source failed or offered an invalid
// policy; the last one keeps serving. A nil err says the source is well
// again with the policy in effect unchanged.
func (p *pipeline) policyFailed(err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if err == nil {
		p.clear(problemPolicy)
		return
	}
	p.m.sourceErrors.WithLabelValues("policy").Inc()
	reason := err.Error()
	if p.config != nil {
		reason += " (serving the last valid policy)"
	}
	p.set(problemPolicy, reason)
	p.log.Warn("policy source failed", serve.KeyError, err.Error())
}

// setEndpoints applies the endpoints of the services in update and
// rebuilds. A service reported with no endpoint keeps its last ones, if it
// had any, and is recorded as a problem until it has some again; one never
// seen stays without.
func (p *pipeline) setEndpoints(update map[string][]model.Endpoint) {
	resolved, failed := resolveAll(update)
	p.mu.Lock()
	defer p.mu.Unlock()
	p.clear(problemCatalog)
	for _, name := range slices.Sorted(maps.Keys(resolved)) {
		eps := resolved[name]
		if len(eps) > 0 {
			p.endpoints[name] = eps
			p.clear(problemService(name))
			continue
		}
		why := "no healthy instance"
		if err := failed[name]; err != nil {
			why = err.Error()
		}
		if last := p.endpoints[name]; len(last) > 0 {
			p.m.endpointsKept.WithLabelValues(name).Inc()
			p.set(problemService(name), fmt.Sprintf("%s; serving its last %d endpoint(s)", why, len(last)))
		} else if failed[name] != nil {
			p.set(problemService(name), why)
		}
	}
	p.rebuild()
}

// resolveTimeout bounds the lookup of one endpoint's host name.
const resolveTimeout = 5 * time.Second

// oneFamily keeps the IPv4 addresses of a lookup when it has any, else
// the rest, as Envoy's DNS clusters do by default (V4_PREFERRED): a
// service listening on 127.0.0.1 only must not get a share of the calls
// sent to ::1.
func oneFamily(addrs []string) []string {
	var v4, other []string
	for _, a := range addrs {
		if ip, err := netip.ParseAddr(a); err == nil && ip.Unmap().Is4() {
			v4 = append(v4, a)
		} else {
			other = append(other, a)
		}
	}
	if len(v4) > 0 {
		return v4
	}
	return other
}

// resolveAll returns update with every host name replaced by its IP
// addresses (Envoy's EDS takes addresses only), sorted. A service whose
// names do not all resolve gets an empty list and its error: it keeps its
// last endpoints, like a service without a healthy instance.
func resolveAll(update map[string][]model.Endpoint) (map[string][]model.Endpoint, map[string]error) {
	out := make(map[string][]model.Endpoint, len(update))
	failed := map[string]error{}
	for name, eps := range update {
		var got []model.Endpoint
		for _, e := range eps {
			if _, err := netip.ParseAddr(e.Host); err == nil {
				got = append(got, e)
				continue
			}
			ctx, cancel := context.WithTimeout(context.Background(), resolveTimeout)
			addrs, err := net.DefaultResolver.LookupHost(ctx, e.Host)
			cancel()
			if err != nil || len(addrs) == 0 {
				failed[name] = fmt.Errorf("endpoint %s: its host does not resolve (%v)", e, err)
				got = nil
				break
			}
			for _, a := range oneFamily(addrs) {
				got = append(got, model.Endpoint{Host: a, Port: e.Port})
			}
		}
		slices.SortFunc(got, func(a, b model.Endpoint) int {
			return cmp.Or(strings.Compare(a.Host, b.Host), cmp.Compare(a.Port, b.Port))
		})
		out[name] = slices.Compact(got)
	}
	return out, failed
}

// dropServices forgets the endpoints and problems of services no longer
// followed (a provider removed from the policy), and rebuilds.
func (p *pipeline) dropServices(names []string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, name := range names {
		delete(p.endpoints, name)
		p.clear(problemService(name))
	}
	p.rebuild()
}

// catalogFailed records that the endpoint source failed; every service
// keeps its endpoints.
func (p *pipeline) catalogFailed(err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.m.sourceErrors.WithLabelValues("catalog").Inc()
	p.set(problemCatalog, err.Error()+" (serving the last endpoints)")
}

// rebuild builds the model and, when it is valid and translates to a new
// version, sets the snapshot. p.mu is held.
func (p *pipeline) rebuild() {
	if p.config == nil {
		p.set(problemModel, "no valid policy yet")
		return
	}
	if p.listener.Port == 0 {
		p.set(problemModel, "the gateway's listener address is not set yet")
		return
	}
	m := &model.Model{Config: p.config, Listener: p.listener, Endpoints: make(map[string][]model.Endpoint, len(p.endpoints))}
	for name, eps := range p.endpoints {
		m.Endpoints[name] = slices.Clone(eps)
	}
	m.Normalize()
	if err := m.Validate(); err != nil {
		p.refuse("invalid", err)
		return
	}
	snap, err := p.translate(m)
	if err != nil {
		p.refuse("translate", err)
		return
	}
	if err := snap.Consistent(); err != nil {
		p.refuse("inconsistent", err)
		return
	}
	p.setProxyless(m)
	p.logGaps(m)
	version := snapshotVersion(snap)
	p.clear(problemModel)
	p.pushed = p.config.Digest()
	if version == p.version {
		p.m.unchanged.Inc()
		return
	}
	if err := p.cache.SetSnapshot(context.Background(), snapshotKey, snap); err != nil {
		p.refuse("cache", err)
		return
	}
	p.snap, p.version, p.pushedAt = snap, version, p.now()
	p.m.pushes.Inc()
	p.notify()
	p.log.Info("snapshot pushed", "version", version)
}

// setProxyless sets the snapshot of the proxyless gRPC clients (see
// proxylessKey) from the model the main snapshot was made of, when its
// version changed. It is derived, not a source of truth: a failure is
// logged and counted, and leaves the main push alone. p.mu is held.
func (p *pipeline) setProxyless(m *model.Model) {
	snap, err := translate.Proxyless(m)
	if err != nil {
		p.m.refused.WithLabelValues("proxyless").Inc()
		p.log.Warn("proxyless snapshot refused: gRPC clients keep the last one", serve.KeyError, err.Error())
		return
	}
	version := snapshotVersion(snap)
	if version == p.proxyless {
		return
	}
	if err := p.cache.SetSnapshot(context.Background(), proxylessKey, snap); err != nil {
		p.m.refused.WithLabelValues("proxyless").Inc()
		p.log.Warn("proxyless snapshot not set", serve.KeyError, err.Error())
		return
	}
	p.proxyless = version
}

// logGaps warns, when the list changes, of the envoyproxy/ratelimit domain
// files that have no RateLimitConfig resource (the resource cannot express
// them; our ratelimit service still gets them in the Runtime). p.mu is held.
func (p *pipeline) logGaps(m *model.Model) {
	gaps := errors.Join(translate.RateLimitConfigGaps(m)...)
	text := ""
	if gaps != nil {
		text = gaps.Error()
	}
	if text != p.gaps && text != "" {
		p.log.Warn("domain files left out of the RateLimitConfig resources (envoyproxy/ratelimit over xDS would not get them)", serve.KeyError, text)
	}
	p.gaps = text
}

// refuse records a model that is not pushed. p.mu is held.
func (p *pipeline) refuse(reason string, err error) {
	p.m.refused.WithLabelValues(reason).Inc()
	msg := err.Error()
	if p.snap != nil {
		msg += " (serving version " + p.version + ")"
	}
	if p.problems[problemModel] != msg {
		p.log.Warn("model refused: nothing pushed", "reason", reason, serve.KeyError, err.Error())
	}
	p.set(problemModel, msg)
}

func (p *pipeline) set(key, reason string) {
	p.problems[key] = reason
	p.m.degraded.Set(1)
}

func (p *pipeline) clear(key string) {
	delete(p.problems, key)
	if len(p.problems) == 0 {
		p.m.degraded.Set(0)
	}
}

// notify wakes whoever waits for a change. p.mu is held.
func (p *pipeline) notify() {
	close(p.changed)
	p.changed = make(chan struct{})
}

// snapshotVersion is the snapshot's version: the one version of its types
// when they share one (the translator's content hash), else a hash of the
// per-type versions.
func snapshotVersion(s *cachev3.Snapshot) string {
	var versions []string
	for typ := range types.UnknownType {
		if v := s.Resources[typ].Version; v != "" {
			versions = append(versions, v)
		}
	}
	slices.Sort(versions)
	versions = slices.Compact(versions)
	if len(versions) == 1 {
		return versions[0]
	}
	h := sha256.New()
	for _, v := range versions {
		fmt.Fprintf(h, "%d:%s", len(v), v)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// state is the pipeline at one moment, for /readyz and the admin API.
type state struct {
	Config   *policy.Snapshot
	Snap     *cachev3.Snapshot // nil before the first push
	Version  string
	PushedAt time.Time
	Problems []string // "key: reason", sorted
}

func (p *pipeline) state() state {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := state{Config: p.config, Snap: p.snap, Version: p.version, PushedAt: p.pushedAt}
	for _, k := range slices.Sorted(maps.Keys(p.problems)) {
		s.Problems = append(s.Problems, k+": "+p.problems[k])
	}
	return s
}

// changes returns a channel closed at the next change of the policy or
// the snapshot.
func (p *pipeline) changes() <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.changed
}

// errNotApplied: a configuration written to the source was not applied
// before the wait ended.
var errNotApplied = errors.New("not applied yet")

// waitConfig waits until a snapshot made of the configuration with digest
// d has been set, and fails at once when the model made of it is refused
// (a required service without endpoints…): a PUT then says it is written
// and not in effect, and why.
func (p *pipeline) waitConfig(ctx context.Context, d [sha256.Size]byte) error {
	for {
		p.mu.Lock()
		pushed, ch := p.snap != nil && p.pushed == d, p.changed
		refused := ""
		if p.config != nil && p.config.Digest() == d {
			refused = p.problems[problemModel]
		}
		p.mu.Unlock()
		switch {
		case pushed:
			return nil
		case refused != "":
			return fmt.Errorf("%w: the model is refused: %s", errNotApplied, refused)
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return errNotApplied
		}
	}
}
