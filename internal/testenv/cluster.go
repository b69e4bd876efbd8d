package testenv

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// ClusterMasters is how many masters a cluster started here has; they
// share the 16384 slots evenly and have no replicas.
const ClusterMasters = 3

// Cluster is a Redis Cluster this package started: ClusterMasters
// redis-server processes in cluster mode, each with its own port, cluster
// bus port and directory (nodes.conf and an append-only file, so a node
// killed with SIGKILL comes back with its slots and its data).
type Cluster struct {
	URL   string    // redis+cluster://127.0.0.1:P1,127.0.0.1:P2,127.0.0.1:P3
	Nodes []*Server // one per master, in the order given to `redis-cli --cluster create`

	dir    string // the nodes' parent directory
	ownDir bool   // dir was made here and is removed at shutdown
}

// RedisClusterURL returns the URL of a 3-master Redis Cluster shared by the
// test run: LEAKY_TEST_REDIS_CLUSTER_URL when set (`make test` starts one),
// else one this test binary starts on first use and stops in Main. Tests
// must namespace their keys with Prefix, never flush it and never kill its
// nodes (StartRedisCluster gives a private one).
func RedisClusterURL(t testing.TB) string {
	t.Helper()
	if u := os.Getenv("LEAKY_TEST_REDIS_CLUSTER_URL"); u != "" {
		return u
	}
	shared.mu.Lock()
	defer shared.mu.Unlock()
	if shared.cluster == nil && shared.errCluster == nil {
		shared.cluster, shared.errCluster = startCluster("")
	}
	if shared.errCluster != nil {
		unavailable(t, "redis cluster", shared.errCluster)
	}
	return shared.cluster.URL
}

// StartRedisCluster starts a private 3-master Redis Cluster for this test,
// stopped at cleanup. Its nodes may be killed and restarted (Server.Kill,
// Server.Restart: same port, bus port and directory).
func StartRedisCluster(t testing.TB) *Cluster {
	t.Helper()
	c, err := startCluster(t.TempDir())
	if err != nil {
		unavailable(t, "redis cluster", err)
	}
	t.Cleanup(c.shutdown)
	return c
}

// WaitOK waits up to timeout for every node to report cluster_state:ok
// with all slots assigned, as after a restart of a killed node.
func (c *Cluster) WaitOK(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for _, n := range c.Nodes {
		if err := waitClusterOK(n.Addr, deadline); err != nil {
			return err
		}
	}
	return nil
}

func (c *Cluster) shutdown() {
	var wg sync.WaitGroup
	for _, n := range c.Nodes {
		wg.Go(n.shutdown)
	}
	wg.Wait()
	if c.ownDir {
		_ = os.RemoveAll(c.dir)
	}
}

// startCluster starts the nodes in dir ("" = a temporary directory of its
// own, removed at shutdown), joins them with `redis-cli --cluster create`
// and waits for cluster_state:ok.
func startCluster(dir string) (*Cluster, error) {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return nil, err
	}
	cli, err := exec.LookPath("redis-cli")
	if err != nil {
		return nil, err
	}
	ownDir := dir == ""
	if ownDir {
		if dir, err = os.MkdirTemp("", "leaky-cluster-"); err != nil {
			return nil, err
		}
	}
	c := &Cluster{dir: dir, ownDir: ownDir}
	addrs := make([]string, 0, ClusterMasters)
	for i := range ClusterMasters {
		n, err := startClusterNode(bin, filepath.Join(dir, strconv.Itoa(i)))
		if err != nil {
			c.shutdown()
			return nil, err
		}
		c.Nodes = append(c.Nodes, n)
		addrs = append(addrs, n.Addr)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	args := append([]string{"--cluster", "create"}, addrs...)
	args = append(args, "--cluster-replicas", "0", "--cluster-yes")
	if out, err := exec.CommandContext(ctx, cli, args...).CombinedOutput(); err != nil {
		c.shutdown()
		return nil, fmt.Errorf("redis-cli --cluster create: %v: %s", err, out)
	}
	if err := c.WaitOK(60 * time.Second); err != nil {
		c.shutdown()
		return nil, err
	}
	c.URL = "redis+cluster://" + strings.Join(addrs, ",")
	return c, nil
}

// startClusterNode starts one cluster-mode redis-server in dir on a free
// port, with its cluster bus on another free port.
func startClusterNode(bin, dir string) (*Server, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	ps, err := freePorts(2) // held open together: two distinct ports
	if err != nil {
		return nil, err
	}
	port, bus := ps[0], ps[1]
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	s := &Server{URL: "redis://" + addr + "/0", Addr: addr, Dir: dir}
	s.start = func() (*exec.Cmd, error) {
		return runRedis(bin, port, dir, "--cluster-enabled", "yes", "--cluster-port", strconv.Itoa(bus),
			"--cluster-config-file", filepath.Join(dir, "nodes.conf"),
			"--cluster-node-timeout", "2000", "--cluster-require-full-coverage", "no",
			// A node killed with SIGKILL keeps what it acknowledged: Redis
			// writes the AOF before it replies.
			"--save", "", "--appendonly", "yes", "--appendfsync", "no")
	}
	if s.cmd, err = s.start(); err != nil {
		return nil, err
	}
	return s, nil
}

// waitClusterOK polls CLUSTER INFO on addr until it reports
// cluster_state:ok and 16384 slots ok, or deadline passes.
func waitClusterOK(addr string, deadline time.Time) error {
	var last string
	for {
		info, err := clusterInfo(addr)
		if err == nil && strings.Contains(info, "cluster_state:ok") && strings.Contains(info, "cluster_slots_ok:16384") {
			return nil
		}
		last = info
		if err != nil {
			last = err.Error()
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("cluster node %s not ok: %s", addr, last)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// clusterInfo sends CLUSTER INFO in RESP and returns the bulk reply.
func clusterInfo(addr string) (string, error) {
	conn, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := conn.Write([]byte("*2\r\n$7\r\nCLUSTER\r\n$4\r\nINFO\r\n")); err != nil {
		return "", err
	}
	buf := make([]byte, 0, 4096)
	tmp := make([]byte, 4096)
	for {
		n, err := conn.Read(tmp)
		buf = append(buf, tmp[:n]...)
		if head, body, ok := strings.Cut(string(buf), "\r\n"); ok && strings.HasPrefix(head, "$") {
			size, perr := strconv.Atoi(head[1:])
			if perr != nil {
				return "", fmt.Errorf("cluster info: bad reply %q", head)
			}
			if len(body) >= size {
				return body[:size], nil
			}
		} else if ok {
			return "", fmt.Errorf("cluster info: %s", head)
		}
		if err != nil {
			return "", errors.Join(errors.New("cluster info: short reply"), err)
		}
	}
}
