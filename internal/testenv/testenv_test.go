package testenv

import (
	"context"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

func TestMain(m *testing.M) { os.Exit(Main(m)) }

func TestRedisAnswersPing(t *testing.T) {
	u := RedisURL(t)
	addr := u[len("redis://") : len(u)-len("/0")]
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 7)
	if _, err := c.Read(buf); err != nil || string(buf) != "+PONG\r\n" {
		t.Fatalf("PING = %q, %v, want +PONG", buf, err)
	}
}

func TestPostgresDatabasePerTest(t *testing.T) {
	a, b := PostgresURL(t), PostgresURL(t)
	if a == b {
		t.Fatalf("PostgresURL twice = %q, want two databases", a)
	}
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, a)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	defer conn.Close(ctx)
	var n int
	if err := conn.QueryRow(ctx, "SELECT 1").Scan(&n); err != nil || n != 1 {
		t.Fatalf("SELECT 1 = %d, %v", n, err)
	}
}

func TestRedisKillRestart(t *testing.T) {
	s := StartRedis(t)
	s.Kill()
	if c, err := net.Dial("tcp", s.Addr); err == nil {
		c.Close()
		t.Fatalf("dial %s after Kill succeeded", s.Addr)
	}
	if err := s.Restart(); err != nil {
		t.Fatalf("Restart: %v", err)
	}
	c, err := net.Dial("tcp", s.Addr)
	if err != nil {
		t.Fatalf("dial after Restart: %v", err)
	}
	c.Close()
}

func TestWithDatabase(t *testing.T) {
	tests := []struct{ name, base, db, want string }{
		{"query", "postgres://p@h:1/postgres?sslmode=disable", "x", "postgres://p@h:1/x?sslmode=disable"},
		{"no query", "postgres://p@h:1/postgres", "x", "postgres://p@h:1/x"},
		{"no path", "postgres://p@h:1", "x", "postgres://p@h:1/x"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := withDatabase(tt.base, tt.db); got != tt.want {
				t.Errorf("withDatabase(%q, %q) = %q, want %q", tt.base, tt.db, got, tt.want)
			}
		})
	}
}

// TestRedisClusterKillRestart: a private cluster serves every slot; a
// killed master comes back on its port with its slots (cluster_state:ok).
func TestRedisClusterKillRestart(t *testing.T) {
	c := StartRedisCluster(t)
	if len(c.Nodes) != ClusterMasters {
		t.Fatalf("cluster has %d nodes, want %d", len(c.Nodes), ClusterMasters)
	}
	n := c.Nodes[1]
	n.Kill()
	if conn, err := net.Dial("tcp", n.Addr); err == nil {
		conn.Close()
		t.Fatalf("dial %s after Kill succeeded", n.Addr)
	}
	if err := n.Restart(); err != nil {
		t.Fatalf("Restart: %v", err)
	}
	if err := c.WaitOK(60 * time.Second); err != nil {
		t.Fatalf("after restart: %v", err)
	}
}

// TestRedisClusterURLShared: the shared cluster's URL names three nodes
// that each report cluster_state:ok.
func TestRedisClusterURLShared(t *testing.T) {
	u := RedisClusterURL(t)
	hosts, ok := strings.CutPrefix(u, "redis+cluster://")
	if !ok {
		t.Fatalf("RedisClusterURL = %q, want redis+cluster://…", u)
	}
	addrs := strings.Split(hosts, ",")
	if len(addrs) != ClusterMasters {
		t.Fatalf("RedisClusterURL names %d nodes, want %d", len(addrs), ClusterMasters)
	}
	for _, a := range addrs {
		if err := waitClusterOK(a, time.Now().Add(30*time.Second)); err != nil {
			t.Error(err)
		}
	}
}
