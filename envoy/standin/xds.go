package standin

import (
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/leakytokens/leaky/envoy/standin/ads"
)

// compiler turns xDS resources into what the gateway executes.
type compiler struct {
	allow allowList
}

// accepted is one ACKed resource: the proto (for /config_dump) and its
// compiled form.
type accepted struct {
	msg      proto.Message
	compiled any
}

// typeSet is every ACKed resource of one type, by name, at a version.
type typeSet struct {
	version   string
	resources map[string]accepted
}

// xdsState is the ads.Handler: it compiles each response, keeps what was
// ACKed per type, and hands a configuration to apply whenever the ACKed
// resources make a complete one (the listener, its routes, every cluster a
// route or filter names and those clusters' endpoints).
type xdsState struct {
	compiler *compiler
	apply    func(*config)
	metrics  *metrics
	log      *slog.Logger

	mu    sync.Mutex
	types map[string]typeSet
}

var _ ads.Handler = (*xdsState)(nil)

// subscriptionOrder is Envoy's: clusters and their endpoints first, then
// listeners and their routes.
var subscriptionOrder = []string{resourcev3.ClusterType, resourcev3.EndpointType, resourcev3.ListenerType, resourcev3.RouteType}

// Handle implements ads.Handler.
func (s *xdsState) Handle(typeURL, version string, resources []*anypb.Any) error {
	set, err := s.compile(typeURL, resources)
	if err != nil {
		s.metrics.xdsUpdates.WithLabelValues(typeName(typeURL), "nack").Inc()
		return err
	}
	s.metrics.xdsUpdates.WithLabelValues(typeName(typeURL), "ack").Inc()
	set.version = version
	s.mu.Lock()
	s.types[typeURL] = set
	cfg, missing := s.assemble()
	s.mu.Unlock()
	if cfg == nil {
		s.log.Info("xds: configuration incomplete; the last one keeps serving", "type_url", typeURL, "version", version, "waiting_for", missing)
		return nil
	}
	s.apply(cfg)
	return nil
}

// compile decodes and compiles every resource of one response; any error
// refuses the whole response, each problem named by resource.
func (s *xdsState) compile(typeURL string, resources []*anypb.Any) (typeSet, error) {
	set := typeSet{resources: map[string]accepted{}}
	var errs []error
	for i, a := range resources {
		name, acc, err := s.compileOne(typeURL, a)
		switch {
		case err != nil:
			errs = append(errs, fmt.Errorf("%s %s: %w", typeName(typeURL), nameOr(name, i), err))
		case name == "":
			errs = append(errs, fmt.Errorf("%s #%d: a name is required", typeName(typeURL), i))
		default:
			if _, dup := set.resources[name]; dup {
				errs = append(errs, fmt.Errorf("%s %s: sent twice", typeName(typeURL), name))
			}
			set.resources[name] = acc
		}
	}
	return set, errors.Join(errs...)
}

func nameOr(name string, i int) string {
	if name == "" {
		return fmt.Sprintf("#%d", i)
	}
	return name
}

func (s *xdsState) compileOne(typeURL string, a *anypb.Any) (string, accepted, error) {
	if a.GetTypeUrl() != typeURL {
		return "", accepted{}, fmt.Errorf("resource of type %s in a %s response", a.GetTypeUrl(), typeURL)
	}
	switch typeURL {
	case resourcev3.ListenerType:
		var m listenerv3.Listener
		if err := a.UnmarshalTo(&m); err != nil {
			return "", accepted{}, err
		}
		c, err := s.compiler.listener(&m)
		return m.GetName(), accepted{&m, c}, err
	case resourcev3.RouteType:
		var m routev3.RouteConfiguration
		if err := a.UnmarshalTo(&m); err != nil {
			return "", accepted{}, err
		}
		c, err := s.compiler.routeConfiguration(&m)
		return m.GetName(), accepted{&m, c}, err
	case resourcev3.ClusterType:
		var m clusterv3.Cluster
		if err := a.UnmarshalTo(&m); err != nil {
			return "", accepted{}, err
		}
		c, err := s.compiler.cluster(&m)
		return m.GetName(), accepted{&m, c}, err
	case resourcev3.EndpointType:
		var m endpointv3.ClusterLoadAssignment
		if err := a.UnmarshalTo(&m); err != nil {
			return "", accepted{}, err
		}
		c, err := s.compiler.assignment(&m)
		return m.GetClusterName(), accepted{&m, c}, err
	}
	return "", accepted{}, fmt.Errorf("type %s is %w", typeURL, errNotImplemented)
}

// Subscriptions implements ads.Handler: every listener and cluster, the
// route configurations the listeners name, the endpoints of the clusters.
func (s *xdsState) Subscriptions() []ads.Subscription {
	s.mu.Lock()
	defer s.mu.Unlock()
	routes, services := map[string]bool{}, map[string]bool{}
	for _, r := range s.types[resourcev3.ListenerType].resources {
		routes[r.compiled.(*listenerConfig).routes] = true
	}
	for _, r := range s.types[resourcev3.ClusterType].resources {
		services[r.compiled.(*clusterConfig).serviceName] = true
	}
	// Never nil: nil would ask for every resource (a wildcard).
	names := func(m map[string]bool) []string { return append([]string{}, slices.Sorted(maps.Keys(m))...) }
	return []ads.Subscription{
		{TypeURL: resourcev3.ClusterType},
		{TypeURL: resourcev3.EndpointType, Names: names(services)},
		{TypeURL: resourcev3.ListenerType},
		{TypeURL: resourcev3.RouteType, Names: names(routes)},
	}
}

// assemble builds a configuration from what is ACKed, or says what it
// still waits for. The caller holds s.mu.
func (s *xdsState) assemble() (*config, []string) {
	listeners := s.types[resourcev3.ListenerType].resources
	if len(listeners) != 1 {
		return nil, []string{fmt.Sprintf("exactly one listener (have %d)", len(listeners))}
	}
	cfg := &config{
		versions:  map[string]string{},
		clusters:  map[string]*clusterConfig{},
		endpoints: map[string][]string{},
		resources: map[string][]proto.Message{},
	}
	for _, t := range subscriptionOrder {
		cfg.versions[typeName(t)] = s.types[t].version
	}
	for _, r := range listeners {
		cfg.listener = r.compiled.(*listenerConfig)
	}
	var missing []string
	rt, ok := s.types[resourcev3.RouteType].resources[cfg.listener.routes]
	if !ok {
		return nil, []string{"route configuration " + cfg.listener.routes}
	}
	cfg.routes = rt.compiled.(*routeTable)
	for _, name := range cfg.referencedClusters() {
		cl, ok := s.types[resourcev3.ClusterType].resources[name]
		if !ok {
			missing = append(missing, "cluster "+name)
			continue
		}
		cc := cl.compiled.(*clusterConfig)
		cla, ok := s.types[resourcev3.EndpointType].resources[cc.serviceName]
		if !ok {
			missing = append(missing, "endpoints "+cc.serviceName)
			continue
		}
		cfg.clusters[name] = cc
		cfg.endpoints[name] = cla.compiled.(*assignment).addrs
		cfg.resources["clusters"] = append(cfg.resources["clusters"], cl.msg)
		cfg.resources["endpoints"] = append(cfg.resources["endpoints"], cla.msg)
	}
	if len(missing) > 0 {
		return nil, missing
	}
	for _, r := range listeners {
		cfg.resources["listeners"] = append(cfg.resources["listeners"], r.msg)
	}
	cfg.resources["routes"] = []proto.Message{rt.msg}
	return cfg, nil
}

// typeName is a type URL's short name (listener, route, cluster, endpoint)
// for logs, errors and metrics.
func typeName(typeURL string) string {
	switch typeURL {
	case resourcev3.ListenerType:
		return "listener"
	case resourcev3.RouteType:
		return "route"
	case resourcev3.ClusterType:
		return "cluster"
	case resourcev3.EndpointType:
		return "endpoint"
	}
	return typeURL
}
