package redisstore

import (
	"errors"
	"hash/fnv"
	"net"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"

	"github.com/leakytokens/leaky/ratelimit/store"
)

// Redis Cluster. A URL redis+cluster://[user:password@]host:port,host:port
// [/][?…] (rediss+cluster:// for TLS) selects go-redis's ClusterClient,
// with the timeouts of a single Redis, no retries, at most
// clusterRedirects MOVED/ASK redirects per call, and maintenance
// notifications off.
//
// Keys. Every key of one item carries one hash tag, so an item lives in
// one slot: a bucket's key is Prefix + kind + "{" + Key + "}"; a quota
// item's window counter, purchased balance, seed generation and Once keys
// are tagged with its Purchased key (its Key when it has none):
// "q:{P}" + Key, "qb:{P}", "qg:{P}", "qo:{P}" + once. A key that cannot be
// a hash tag verbatim (empty, or holding "}") is tagged with its 64-bit
// FNV-1a hash in hex instead, and kept whole after the tag. The
// reservation records, their leases and their index share the tag "{rx}"
// (one slot), so reserve.lua runs unchanged. A single Redis's keys have no
// tags. Options.Prefix may hold no braces on a cluster.

// clusterRedirects bounds the MOVED/ASK redirects one call follows.
const clusterRedirects = 2

// clusterScheme is the scheme go-redis parses for a cluster URL's scheme,
// "" when it is not a cluster's.
func clusterScheme(scheme string) string {
	switch strings.ToLower(scheme) {
	case "redis+cluster":
		return "redis"
	case "rediss+cluster":
		return "rediss"
	}
	return ""
}

// isClusterURL reports whether u names a Redis Cluster.
func isClusterURL(u string) bool {
	scheme, _, ok := strings.Cut(u, "://")
	return ok && clusterScheme(scheme) != ""
}

// errClusterURL never quotes the URL: it may hold a password.
var errClusterURL = errors.New("redis cluster url: cannot parse it (redis+cluster://[user:password@]host:port,host:port[?…]; not shown, it may hold a password)")

// parseClusterURL reads a cluster URL into go-redis's options: the node
// list from the host part, the rest (credentials, TLS, query) as
// go-redis's ParseClusterURL reads it.
func parseClusterURL(raw string) (*redis.ClusterOptions, error) {
	scheme, rest, _ := strings.Cut(raw, "://")
	hostEnd := strings.IndexAny(rest, "/?")
	if hostEnd < 0 {
		hostEnd = len(rest)
	}
	authority, tail := rest[:hostEnd], rest[hostEnd:]
	userinfo, hosts := "", authority
	if i := strings.LastIndexByte(authority, '@'); i >= 0 {
		userinfo, hosts = authority[:i+1], authority[i+1:]
	}
	path, query, _ := strings.Cut(tail, "?")
	if path != "" && path != "/" {
		return nil, errClusterURL // a cluster has no database number
	}
	var addrs []string
	for _, h := range strings.Split(hosts, ",") {
		host, port, err := net.SplitHostPort(h)
		if err != nil || host == "" {
			return nil, errClusterURL
		}
		if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
			return nil, errClusterURL
		}
		addrs = append(addrs, h)
	}
	u := clusterScheme(scheme) + "://" + userinfo + addrs[0]
	if query != "" {
		u += "?" + query
	}
	if _, err := url.Parse(u); err != nil {
		return nil, errClusterURL
	}
	o, err := redis.ParseClusterURL(u)
	if err != nil {
		return nil, errClusterURL
	}
	o.Addrs = append(addrs, o.Addrs[1:]...) // the URL's nodes, then any addr= in its query
	return o, nil
}

// dialCluster sets s's clients for a cluster URL: s.c with the store's
// timeouts, s.settle with settleCap (a second set of connections: a
// ClusterClient has no WithTimeout). It returns the client that loads the
// scripts, on every master.
func (s *Store) dialCluster(opts Options) (redis.UniversalClient, error) {
	if strings.ContainsAny(s.prefix, "{}") {
		return nil, errors.New("redis cluster: the key prefix may not hold '{' or '}' (they would change the keys' hash slots)")
	}
	co, err := parseClusterURL(opts.URL)
	if err != nil {
		return nil, err
	}
	co.MaxRetries = -1
	co.MaxRedirects = clusterRedirects
	co.ContextTimeoutEnabled = true
	co.DialerRetries = 1
	co.DialTimeout = max(4*s.timeout, 100*time.Millisecond)
	co.ReadTimeout = s.timeout
	co.WriteTimeout = s.timeout
	co.PoolTimeout = s.timeout
	co.MaintNotificationsConfig = &maintnotifications.Config{Mode: maintnotifications.ModeDisabled}
	if opts.PoolSize > 0 {
		co.PoolSize = opts.PoolSize
	}
	settle := *co
	settle.ReadTimeout, settle.WriteTimeout = settleCap, settleCap
	settle.MaintNotificationsConfig = &maintnotifications.Config{Mode: maintnotifications.ModeDisabled}
	s.cluster = true
	s.c = redis.NewClusterClient(co)
	s.settle = redis.NewClusterClient(&settle)
	return s.settle, nil
}

// tagged is name behind it's hash tag (see the key layout above): "{t}"
// alone when name is the tag's source and a valid tag verbatim.
func (s *Store) tagged(it store.Item, name string) string {
	src := it.Key
	if it.Algorithm == store.Quota && it.Purchased != "" {
		src = it.Purchased
	}
	if src != "" && !strings.Contains(src, "}") {
		if name == src {
			return "{" + src + "}"
		}
		return "{" + src + "}" + name
	}
	h := fnv.New64a()
	h.Write([]byte(src))
	return "{" + strconv.FormatUint(h.Sum64(), 16) + "}" + name
}

// rxTag is the reservation keys' hash tag on a cluster.
func (s *Store) rxTag() string {
	if s.cluster {
		return "{rx}"
	}
	return ""
}

// slotOf is Redis Cluster's hash slot of key: CRC16 (XMODEM) of its hash
// tag (the bytes between the first '{' and the first '}' after it, when
// not empty) or of the whole key, modulo 16384.
func slotOf(key string) int {
	if i := strings.IndexByte(key, '{'); i >= 0 {
		if j := strings.IndexByte(key[i+1:], '}'); j > 0 {
			key = key[i+1 : i+1+j]
		}
	}
	var crc uint16
	for k := 0; k < len(key); k++ {
		crc ^= uint16(key[k]) << 8
		for range 8 {
			if crc&0x8000 != 0 {
				crc = crc<<1 ^ 0x1021
			} else {
				crc <<= 1
			}
		}
	}
	return int(crc % 16384)
}

// bySlot groups the indexes 0..n-1 by slot(i): groups in ascending slot
// order, indexes in their order within a group.
func bySlot(n int, slot func(i int) int) [][]int {
	slots := make(map[int][]int)
	for i := range n {
		sl := slot(i)
		slots[sl] = append(slots[sl], i)
	}
	keys := make([]int, 0, len(slots))
	for sl := range slots {
		keys = append(keys, sl)
	}
	slices.Sort(keys)
	groups := make([][]int, len(keys))
	for g, sl := range keys {
		groups[g] = slots[sl]
	}
	return groups
}

// itemSlot is the slot of every key of it.
func (s *Store) itemSlot(it store.Item) int {
	if it.Key == "" {
		return slotOf(s.balanceKey(it))
	}
	return slotOf(s.key(it))
}

// pick returns xs at idx.
func pick[T any](xs []T, idx []int) []T {
	out := make([]T, len(idx))
	for j, i := range idx {
		out[j] = xs[i]
	}
	return out
}
