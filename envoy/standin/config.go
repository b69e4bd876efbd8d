package standin

import (
	"maps"
	"slices"

	"google.golang.org/protobuf/proto"
)

// config is one complete, consistent configuration: the listener, its
// routes, and every cluster a route or filter names with its endpoints.
// It is immutable once built.
type config struct {
	versions  map[string]string // short type name → the version it came in
	listener  *listenerConfig
	routes    *routeTable
	clusters  map[string]*clusterConfig
	endpoints map[string][]string // cluster name → host:port
	// resources are the protos it was compiled from, by kind, for
	// /config_dump.
	resources map[string][]proto.Message
}

// referencedClusters is every cluster a route or a filter (ext_authz,
// ratelimit, ext_proc) names, sorted.
func (c *config) referencedClusters() []string {
	set := map[string]bool{}
	for _, vh := range c.routes.vhosts {
		for _, r := range vh.routes {
			set[r.cluster] = true
		}
	}
	if a := c.listener.authz; a != nil {
		set[a.cluster] = true
	}
	if l := c.listener.limit; l != nil {
		set[l.cluster] = true
	}
	if e := c.listener.extProc; e != nil {
		set[e.cluster] = true
	}
	return slices.Sorted(maps.Keys(set))
}

// sameAs reports whether c and o came from the same versions of every type
// (so applying c again would change nothing).
func (c *config) sameAs(o *config) bool {
	return o != nil && maps.Equal(c.versions, o.versions) &&
		slices.Equal(c.referencedClusters(), o.referencedClusters())
}
