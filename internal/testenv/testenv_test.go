package testenv

import (
	"context"
	"net"
	"os"
	"testing"

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
