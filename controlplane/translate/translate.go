// Package translate turns a control-plane model into the xDS resources of
// the generated configuration (the shared spec: one listener, one route
// configuration, a cluster and a load assignment per service, the Runtime
// that carries the policy files, a RateLimitConfig per envoyproxy/ratelimit
// domain). It is pure: no I/O, no clock, no package state; the same model
// always gives the same resources and the same version.
//
// Translate gives the snapshot the control plane serves over ADS; Static
// gives the same configuration as one Envoy bootstrap for a gateway with no
// control plane; Bootstrap gives the bootstrap of an Envoy that takes
// everything from the control plane. All three are built by the same
// functions, so they cannot drift apart.
//
// Envoy proto imports follow the project's alias scheme (the proto
// package's last element plus its version), with these names where the
// last element is ambiguous or long: hcmv3 for the HTTP connection
// manager, extauthzv3, ratelimitfilterv3 and routerv3 for the HTTP filters,
// headermutationv3 for the early header mutation, upstreamhttpv3 for
// extensions/upstreams/http, mutationrulesv3 for config/common/mutation_rules,
// ratelimitconfv3 for config/ratelimit, rlconfv3 for envoyproxy/ratelimit's
// RateLimitConfig.
package translate

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"

	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/leakytokens/leaky/controlplane/model"
)

// Translate builds the snapshot of a valid model: every resource of
// Resources, versioned with Version, checked with Consistent. A model that
// fails Validate is refused with Validate's error, and so is one with a host
// name where Envoy wants an IP address (see check) or whose
// envoyproxy/ratelimit domain files cannot be expressed as RateLimitConfig.
func Translate(m *model.Model) (*cachev3.Snapshot, error) {
	res, err := Resources(m)
	if err != nil {
		return nil, err
	}
	version, err := Version(res)
	if err != nil {
		return nil, err
	}
	snap, err := cachev3.NewSnapshot(version, res)
	if err != nil {
		return nil, fmt.Errorf("translate: %w", err)
	}
	if err := snap.Consistent(); err != nil {
		return nil, fmt.Errorf("translate: inconsistent snapshot: %w", err)
	}
	return snap, nil
}

// Resources builds every resource of a valid model by type URL, each list
// sorted by resource name. The model must pass Validate, and its listener
// and endpoints must be IP addresses.
func Resources(m *model.Model) (map[resourcev3.Type][]types.Resource, error) {
	if err := check(m, true); err != nil {
		return nil, err
	}
	lis, err := listener(m, rdsRoutes())
	if err != nil {
		return nil, err
	}
	rc, err := routeConfig(m)
	if err != nil {
		return nil, err
	}
	names := clusterNames(m)
	clusters := make([]types.Resource, 0, len(names))
	loads := make([]types.Resource, 0, len(names))
	for _, name := range names {
		c, err := cluster(m, name, edsDiscovery(name))
		if err != nil {
			return nil, err
		}
		clusters = append(clusters, c)
		loads = append(loads, loadAssignment(name, m.Endpoints[name]))
	}
	rt, err := runtime(m)
	if err != nil {
		return nil, err
	}
	rls, err := rateLimitConfigs(m)
	if err != nil {
		return nil, err
	}
	return map[resourcev3.Type][]types.Resource{
		resourcev3.ListenerType:        {lis},
		resourcev3.RouteType:           {rc},
		resourcev3.ClusterType:         clusters,
		resourcev3.EndpointType:        loads,
		resourcev3.RuntimeType:         {rt},
		resourcev3.RateLimitConfigType: rls,
	}, nil
}

// Version is the content hash of a set of resources: the hex SHA-256 over
// each type URL and, in name order, each resource's name and deterministic
// proto encoding, every part length-prefixed. Equal resources give equal
// versions; any change to any resource gives a new one.
func Version(res map[resourcev3.Type][]types.Resource) (string, error) {
	h := sha256.New()
	for _, typ := range slices.Sorted(maps.Keys(res)) {
		fmt.Fprintf(h, "%d:%s%d:", len(typ), typ, len(res[typ]))
		list := slices.Clone(res[typ])
		slices.SortFunc(list, func(a, b types.Resource) int {
			return strings.Compare(cachev3.GetResourceName(a), cachev3.GetResourceName(b))
		})
		for _, r := range list {
			data, err := proto.MarshalOptions{Deterministic: true}.Marshal(r)
			if err != nil {
				return "", fmt.Errorf("translate: marshal %s %s: %w", typ, cachev3.GetResourceName(r), err)
			}
			name := cachev3.GetResourceName(r)
			fmt.Fprintf(h, "%d:%s%d:", len(name), name, len(data))
			h.Write(data)
		}
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// check refuses a model that fails Validate, or whose addresses Envoy would
// refuse: the listener's host must be an IP address (Envoy binds no name),
// and so must every endpoint's when eds (EDS resolves no name; Static
// resolves them with STRICT_DNS clusters instead).
func check(m *model.Model, eds bool) error {
	if m == nil {
		return errors.New("translate: no model")
	}
	if err := m.Validate(); err != nil {
		return fmt.Errorf("translate: %w", err)
	}
	var errs []error
	if _, err := netip.ParseAddr(m.Listener.Host); err != nil {
		errs = append(errs, fmt.Errorf("translate: listener %s: want an IP address (Envoy binds no host name)", m.Listener))
	}
	if eds {
		for _, s := range slices.Sorted(maps.Keys(m.Endpoints)) {
			for _, e := range m.Endpoints[s] {
				if _, err := netip.ParseAddr(e.Host); err != nil {
					errs = append(errs, fmt.Errorf("translate: service %s: endpoint %s: want an IP address (Envoy's EDS resolves no host name; resolve it in the source)", s, e))
				}
			}
		}
	}
	return errors.Join(errs...)
}

// clusterNames is every cluster the configuration has, sorted: the ones
// the routes and filters name, the model's required ones and every service
// with endpoints. A routed service without endpoints still gets its
// cluster (with an empty load assignment), so the gateway answers 503 "no
// healthy upstream" for it rather than "no route".
func clusterNames(m *model.Model) []string {
	set := map[string]bool{}
	for _, s := range model.Required(m.Config.Policy()) {
		set[s] = true
	}
	for _, s := range []string{model.ServiceAuthzGRPC, model.ServiceAuthzHTTP, model.ServiceRatelimitGRPC,
		model.ServiceRatelimitHTTP, model.ServiceAnalyticsHTTP} {
		set[s] = true
	}
	for s := range m.Endpoints {
		set[s] = true
	}
	return slices.Sorted(maps.Keys(set))
}

// typed packs a message into an Any, naming what it packs on failure. The
// bytes are marshalled deterministically (map entries sorted, as in the
// local reply's json_format), so the same model always packs the same Any
// and Version stays a content hash.
func typed(what string, msg proto.Message) (*anypb.Any, error) {
	a := &anypb.Any{}
	if err := anypb.MarshalFrom(a, msg, proto.MarshalOptions{Deterministic: true}); err != nil {
		return nil, fmt.Errorf("translate: pack %s: %w", what, err)
	}
	return a, nil
}
