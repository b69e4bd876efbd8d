// Package testenv starts or finds the backends a test needs: Redis, a
// 3-master Redis Cluster, PostgreSQL and a Consul agent, real servers on
// free loopback ports in temporary directories.
//
// `make test` starts one Redis, one Redis Cluster, one PostgreSQL and one
// Consul agent for the whole run and exports LEAKY_TEST_REDIS_URL,
// LEAKY_TEST_REDIS_CLUSTER_URL, LEAKY_TEST_DATABASE_URL and
// LEAKY_TEST_CONSUL_ADDR (with LEAKY_TEST_CONSUL_BIN, the agent's binary); a
// test binary run without them starts its own shared servers on first use
// and stops them when the binary exits (via TestMain calling Main, or at
// process exit where the OS reaps them). Tests that kill or hang a backend
// get a private server from StartRedis, StartRedisCluster, StartPostgres or
// StartConsul.
//
// When a backend cannot be had, the test fails if CI is set and skips with a
// message otherwise.
package testenv

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"regexp"
	"strings"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"
)

// shared holds the servers a test binary started for itself; a harness
// needs process-wide state because tests of one binary share a server.
var shared struct {
	mu         sync.Mutex
	redis      *Server
	postgres   *Server
	consul     *ConsulAgent
	errRedis   error
	errPG      error
	errConsul  error
	cluster    *Cluster
	errCluster error
}

// Main runs the tests of a package and then stops the shared servers the
// binary started. Use it from TestMain: os.Exit(testenv.Main(m)).
func Main(m *testing.M) int {
	code := m.Run()
	shared.mu.Lock()
	defer shared.mu.Unlock()
	for _, s := range []*Server{shared.redis, shared.postgres} {
		if s != nil {
			s.shutdown()
		}
	}
	if shared.consul != nil {
		shared.consul.shutdown()
	}
	if shared.cluster != nil {
		shared.cluster.shutdown()
	}
	return code
}

// unavailable fails the test in CI and skips it elsewhere.
func unavailable(t testing.TB, what string, err error) {
	t.Helper()
	if os.Getenv("CI") != "" {
		t.Fatalf("%s is required in CI and unavailable: %v (run the tests with `make test`, which installs and starts it)", what, err)
	}
	t.Skipf("%s unavailable: %v (`make test` installs and starts it)", what, err)
}

// RedisURL returns the URL of a Redis shared by the test run. Tests must
// namespace their keys with Prefix and never flush it.
func RedisURL(t testing.TB) string {
	t.Helper()
	if u := os.Getenv("LEAKY_TEST_REDIS_URL"); u != "" {
		return u
	}
	shared.mu.Lock()
	defer shared.mu.Unlock()
	if shared.redis == nil && shared.errRedis == nil {
		shared.redis, shared.errRedis = startRedis("")
	}
	if shared.errRedis != nil {
		unavailable(t, "redis-server", shared.errRedis)
	}
	return shared.redis.URL
}

// PostgresURL returns the URL of a new, empty database created for this test
// and dropped when it ends.
func PostgresURL(t testing.TB) string {
	t.Helper()
	base := os.Getenv("LEAKY_TEST_DATABASE_URL")
	if base == "" {
		shared.mu.Lock()
		if shared.postgres == nil && shared.errPG == nil {
			shared.postgres, shared.errPG = startPostgres("")
		}
		err := shared.errPG
		if err == nil {
			base = shared.postgres.URL
		}
		shared.mu.Unlock()
		if err != nil {
			unavailable(t, "postgresql", err)
		}
	}
	return createDatabase(t, base)
}

func createDatabase(t testing.TB, base string) string {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, base)
	if err != nil {
		unavailable(t, "postgresql", err)
	}
	defer conn.Close(ctx)
	name := "t_" + strings.ToLower(strings.Trim(sanitize(t.Name()), "_"))
	if len(name) > 40 {
		name = name[:40]
	}
	name += "_" + randomHex(4)
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		t.Fatalf("create database %s: %v", name, err)
	}
	t.Cleanup(func() {
		c, err := pgx.Connect(context.Background(), base)
		if err != nil {
			return
		}
		defer c.Close(context.Background())
		_, _ = c.Exec(context.Background(), "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)")
	})
	return withDatabase(base, name)
}

// withDatabase replaces the database name in a postgres:// URL.
func withDatabase(base, name string) string {
	rest, query, _ := strings.Cut(base, "?")
	i := strings.LastIndex(rest, "/")
	if i < len("postgres://") {
		rest += "/"
		i = len(rest) - 1
	}
	u := rest[:i+1] + name
	if query != "" {
		u += "?" + query
	}
	return u
}

// Prefix returns a key prefix unique to this test, ending in ":".
func Prefix(t testing.TB) string {
	return "t:" + sanitize(t.Name()) + ":" + randomHex(4) + ":"
}

var unsafeChars = regexp.MustCompile(`[^A-Za-z0-9_]+`)

func sanitize(s string) string { return unsafeChars.ReplaceAllString(s, "_") }

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
