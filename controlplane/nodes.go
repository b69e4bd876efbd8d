package controlplane

import (
	"context"
	"maps"
	"slices"
	"sync"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
)

// Bounds of what the node records keep of what clients send.
const (
	maxNodes     = 1024 // nodes remembered; the disconnected one seen longest ago goes first
	maxIDLen     = 256  // node id and cluster, in bytes
	maxDetailLen = 1024 // a NACK's error detail, in bytes
)

// NodeStatus is what the control plane knows of one xDS client (node id),
// across its streams.
type NodeStatus struct {
	ID        string                 `json:"id"`
	Cluster   string                 `json:"cluster"`
	Connected bool                   `json:"connected"` // at least one stream open
	LastSeen  time.Time              `json:"last_seen"` // the last request or response
	Types     map[string]*TypeStatus `json:"types"`     // by resource type URL
}

// TypeStatus is one node's state for one resource type.
type TypeStatus struct {
	Sent     string `json:"sent"`                // the version last sent
	ACKed    string `json:"acked"`               // the version last acknowledged
	LastNACK *NACK  `json:"last_nack,omitempty"` // the last rejection, kept after later ACKs
}

// NACK is a rejected response.
type NACK struct {
	Version string    `json:"version"` // the version rejected
	Error   string    `json:"error"`   // the client's error detail
	At      time.Time `json:"at"`
}

// nodes records, per node, what was sent, ACKed and NACKed: the xDS
// server's callbacks. It also tells the cache which version a NACK
// rejected, so the cache does not send it again. Safe for concurrent use.
type nodes struct {
	cache *parkingCache
	m     *metrics
	now   func() time.Time

	mu      sync.Mutex
	nodes   map[string]*NodeStatus
	streams map[int64]*streamState
}

// streamState is one open stream.
type streamState struct {
	node    string                  // its node id; "" until the first request
	sent    map[string]sentResponse // by type URL: the last response
	pending *discovery.DiscoveryRequest
}

type sentResponse struct{ nonce, version string }

var _ serverv3.Callbacks = (*nodes)(nil)

func newNodes(cache *parkingCache, m *metrics, now func() time.Time) *nodes {
	return &nodes{cache: cache, m: m, now: now, nodes: map[string]*NodeStatus{}, streams: map[int64]*streamState{}}
}

// OnStreamOpen starts recording a stream.
func (n *nodes) OnStreamOpen(_ context.Context, id int64, _ string) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.streams[id] = &streamState{sent: map[string]sentResponse{}}
	n.m.streams.Inc()
	return nil
}

// OnStreamClosed marks the stream's node disconnected when it was its
// last stream.
func (n *nodes) OnStreamClosed(id int64, _ *core.Node) {
	n.mu.Lock()
	defer n.mu.Unlock()
	st, ok := n.streams[id]
	if !ok {
		return
	}
	delete(n.streams, id)
	n.m.streams.Dec()
	if st.pending != nil {
		n.cache.forget(st.pending)
	}
	if ns := n.nodes[st.node]; ns != nil {
		ns.Connected = slices.ContainsFunc(slices.Collect(maps.Values(n.streams)),
			func(o *streamState) bool { return o.node == st.node })
		ns.LastSeen = n.now()
	}
}

// OnStreamRequest records an ACK or a NACK of the last response of its
// type on the stream, and parks a NACK in the cache.
func (n *nodes) OnStreamRequest(id int64, req *discovery.DiscoveryRequest) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	st, ok := n.streams[id]
	if !ok {
		return nil
	}
	if st.pending != nil {
		n.cache.forget(st.pending)
		st.pending = nil
	}
	ns := n.node(st, req.GetNode())
	ns.LastSeen = n.now()
	typ := req.GetTypeUrl()
	last, sent := st.sent[typ]
	if !sent || req.GetResponseNonce() == "" || req.GetResponseNonce() != last.nonce {
		return nil // a subscription, or a stale nonce the server ignores
	}
	ts := typeStatus(ns, typ)
	if d := req.GetErrorDetail(); d != nil {
		ts.LastNACK = &NACK{Version: last.version, Error: truncate(d.GetMessage(), maxDetailLen), At: n.now()}
		n.m.nacks.WithLabelValues(typ).Inc()
		n.cache.park(req, last.version)
		st.pending = req
		return nil
	}
	ts.ACKed = req.GetVersionInfo()
	n.m.acks.WithLabelValues(typ).Inc()
	return nil
}

// OnStreamResponse records the version and nonce sent.
func (n *nodes) OnStreamResponse(_ context.Context, id int64, req *discovery.DiscoveryRequest, resp *discovery.DiscoveryResponse) {
	n.mu.Lock()
	defer n.mu.Unlock()
	st, ok := n.streams[id]
	if !ok {
		return
	}
	typ := resp.GetTypeUrl()
	st.sent[typ] = sentResponse{nonce: resp.GetNonce(), version: resp.GetVersionInfo()}
	ns := n.node(st, req.GetNode())
	ns.LastSeen = n.now()
	typeStatus(ns, typ).Sent = resp.GetVersionInfo()
	n.m.xdsResponses.WithLabelValues(typ).Inc()
}

// node returns the record of the stream's node, creating it (and binding
// the stream to it) on first sight. n.mu is held.
func (n *nodes) node(st *streamState, node *core.Node) *NodeStatus {
	if st.node == "" {
		st.node = truncate(node.GetId(), maxIDLen)
	}
	ns, ok := n.nodes[st.node]
	if !ok {
		n.evict()
		ns = &NodeStatus{ID: st.node, Types: map[string]*TypeStatus{}}
		n.nodes[st.node] = ns
	}
	if c := node.GetCluster(); c != "" {
		ns.Cluster = truncate(c, maxIDLen)
	}
	ns.Connected = true
	return ns
}

// evict makes room for one more node when maxNodes are kept, dropping the
// disconnected node seen longest ago. n.mu is held.
func (n *nodes) evict() {
	if len(n.nodes) < maxNodes {
		return
	}
	var oldest *NodeStatus
	for _, ns := range n.nodes {
		if !ns.Connected && (oldest == nil || ns.LastSeen.Before(oldest.LastSeen)) {
			oldest = ns
		}
	}
	if oldest != nil {
		delete(n.nodes, oldest.ID)
	}
}

func typeStatus(ns *NodeStatus, typ string) *TypeStatus {
	ts, ok := ns.Types[typ]
	if !ok {
		ts = &TypeStatus{}
		ns.Types[typ] = ts
	}
	return ts
}

// list returns a copy of every node's record, sorted by id.
func (n *nodes) list() []NodeStatus {
	n.mu.Lock()
	defer n.mu.Unlock()
	out := make([]NodeStatus, 0, len(n.nodes))
	for _, id := range slices.Sorted(maps.Keys(n.nodes)) {
		ns := *n.nodes[id]
		ns.Types = make(map[string]*TypeStatus, len(ns.Types))
		for typ, ts := range n.nodes[id].Types {
			c := *ts
			if c.LastNACK != nil {
				nack := *c.LastNACK
				c.LastNACK = &nack
			}
			ns.Types[typ] = &c
		}
		out = append(out, ns)
	}
	return out
}

// acked reports whether every connected node that was sent typ has
// acknowledged version of it.
func (n *nodes) acked(typ, version string) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, ns := range n.nodes {
		if ts := ns.Types[typ]; ns.Connected && ts != nil && ts.ACKed != version {
			return false
		}
	}
	return true
}

// waitACKed polls until every connected node that was sent typ has
// acknowledged the version version() names (read on every poll), or ctx
// ends (errNotApplied).
func (n *nodes) waitACKed(ctx context.Context, typ string, version func() string) error {
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for v := version(); v == "" || !n.acked(typ, v); v = version() {
		select {
		case <-ctx.Done():
			return errNotApplied
		case <-tick.C:
		}
	}
	return nil
}

// truncate cuts s to at most n bytes.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}

// The delta and REST protocols are served by the cache but not recorded.

func (n *nodes) OnDeltaStreamOpen(context.Context, int64, string) error { return nil }
func (n *nodes) OnDeltaStreamClosed(int64, *core.Node)                  {}
func (n *nodes) OnStreamDeltaRequest(int64, *discovery.DeltaDiscoveryRequest) error {
	return nil
}
func (n *nodes) OnStreamDeltaResponse(int64, *discovery.DeltaDiscoveryRequest, *discovery.DeltaDiscoveryResponse) {
}
func (n *nodes) OnFetchRequest(context.Context, *discovery.DiscoveryRequest) error         { return nil }
func (n *nodes) OnFetchResponse(*discovery.DiscoveryRequest, *discovery.DiscoveryResponse) {}
