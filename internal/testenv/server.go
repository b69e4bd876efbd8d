package testenv

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// Server is a backend process this package started. Its methods are safe for
// concurrent use.
type Server struct {
	URL  string // redis://127.0.0.1:PORT/0 or postgres://postgres@127.0.0.1:PORT/postgres?sslmode=disable
	Addr string // 127.0.0.1:PORT
	Dir  string // the server's temporary directory

	mu     sync.Mutex
	start  func() (*exec.Cmd, error) // starts the process on the same port and directory
	cmd    *exec.Cmd
	ownDir bool // Dir was made here and is removed at shutdown
}

// StartRedis starts a private redis-server for this test, stopped at cleanup.
func StartRedis(t testing.TB) *Server {
	t.Helper()
	s, err := startRedis(t.TempDir())
	if err != nil {
		unavailable(t, "redis-server", err)
	}
	t.Cleanup(s.shutdown)
	return s
}

// StartPostgres starts a private PostgreSQL cluster for this test, stopped at
// cleanup. Its URL names the "postgres" database.
func StartPostgres(t testing.TB) *Server {
	t.Helper()
	s, err := startPostgres("")
	if err != nil {
		unavailable(t, "postgresql", err)
	}
	t.Cleanup(s.shutdown)
	return s
}

// Kill ends the server with SIGKILL, as a crash would.
func (s *Server) Kill() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.signalAll(syscall.SIGKILL)
	if s.cmd != nil {
		_ = s.cmd.Wait()
		s.cmd = nil
	}
}

// Stop freezes the server with SIGSTOP: connections stay open and nothing
// answers, as with a hung backend.
func (s *Server) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.signalAll(syscall.SIGSTOP)
}

// Cont resumes a server frozen by Stop.
func (s *Server) Cont() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.signalAll(syscall.SIGCONT)
}

// Restart starts a killed server again on the same port and directory.
func (s *Server) Restart() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil {
		return errors.New("server is running")
	}
	cmd, err := s.start()
	if err != nil {
		return err
	}
	s.cmd = cmd
	return nil
}

func (s *Server) shutdown() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return
	}
	s.signalAll(syscall.SIGCONT)
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = s.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		s.signalAll(syscall.SIGKILL)
		<-done
	}
	s.cmd = nil
	if s.ownDir {
		_ = os.RemoveAll(s.Dir)
	}
}

// signalAll signals the server process and, for PostgreSQL, its backends.
func (s *Server) signalAll(sig syscall.Signal) {
	if s.cmd == nil || s.cmd.Process == nil {
		return
	}
	pid := s.cmd.Process.Pid
	for _, child := range descendants(pid) {
		_ = syscall.Kill(child, sig)
	}
	_ = syscall.Kill(pid, sig)
}

// descendants lists the children of pid and theirs, from /proc.
func descendants(pid int) []int {
	var out []int
	for _, c := range children(pid) {
		out = append(out, c)
		out = append(out, descendants(c)...)
	}
	return out
}

// children lists the direct children of pid from /proc.
func children(pid int) []int {
	var out []int
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		child, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// Fields after the command (which may contain spaces) start after ')'.
		i := bytes.LastIndexByte(stat, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(stat[i+1:]))
		if len(f) > 1 && f[1] == strconv.Itoa(pid) {
			out = append(out, child)
		}
	}
	return out
}

func startRedis(dir string) (*Server, error) {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return nil, err
	}
	ownDir := dir == ""
	if ownDir {
		if dir, err = os.MkdirTemp("", "leaky-redis-"); err != nil {
			return nil, err
		}
	}
	port, err := FreePort()
	if err != nil {
		return nil, err
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	s := &Server{URL: "redis://" + addr + "/0", Addr: addr, Dir: dir, ownDir: ownDir}
	s.start = func() (*exec.Cmd, error) {
		return runRedis(bin, port, dir, "--save", "", "--appendonly", "no")
	}
	if s.cmd, err = s.start(); err != nil {
		return nil, err
	}
	return s, nil
}

// runRedis starts redis-server bin on 127.0.0.1:port with its files and log
// in dir and the extra args, and waits until it accepts connections.
func runRedis(bin string, port int, dir string, args ...string) (*exec.Cmd, error) {
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	cmd := exec.Command(bin, append(append([]string{"--port", strconv.Itoa(port), "--bind", "127.0.0.1"}, args...),
		"--dir", dir, "--daemonize", "no", "--logfile", filepath.Join(dir, "redis.log"))...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	// Generous: a loaded machine (a cold build beside the tests) is slow to exec.
	if err := waitTCP(addr, 30*time.Second); err != nil {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		return nil, fmt.Errorf("redis-server on %s: %w", addr, err)
	}
	return cmd, nil
}

// pgBin finds a PostgreSQL server binary on PATH or in Debian's location.
func pgBin(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	matches, _ := filepath.Glob("/usr/lib/postgresql/*/bin/" + name)
	if len(matches) == 0 {
		return "", fmt.Errorf("%s not found on PATH or in /usr/lib/postgresql/*/bin", name)
	}
	// The newest major version: compare "15" and "9.6" as numbers, not text.
	major := func(p string) float64 {
		v, _ := strconv.ParseFloat(filepath.Base(filepath.Dir(filepath.Dir(p))), 64)
		return v
	}
	slices.SortFunc(matches, func(a, b string) int { return cmp.Compare(major(a), major(b)) })
	return matches[len(matches)-1], nil
}

// asPostgres runs a command as the postgres user when we are root, since
// PostgreSQL refuses to run as root. The process dies with its parent.
func asPostgres(cred *syscall.Credential, bin string, args ...string) *exec.Cmd {
	cmd := exec.Command(bin, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred, Pdeathsig: syscall.SIGKILL}
	return cmd
}

func startPostgres(dir string) (*Server, error) {
	initdb, err := pgBin("initdb")
	if err != nil {
		return nil, err
	}
	postgres, err := pgBin("postgres")
	if err != nil {
		return nil, err
	}
	if dir == "" {
		if dir, err = os.MkdirTemp("", "leaky-pg-"); err != nil {
			return nil, err
		}
	}
	var cred *syscall.Credential
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			return nil, fmt.Errorf("running as root needs a postgres user: %w", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		if err := os.Chown(dir, uid, gid); err != nil {
			return nil, err
		}
		cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
	}
	data := filepath.Join(dir, "data")
	out, err := asPostgres(cred, initdb, "-D", data, "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8", "--no-locale").CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("initdb: %v: %s", err, out)
	}
	port, err := FreePort()
	if err != nil {
		return nil, err
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	s := &Server{
		URL:  fmt.Sprintf("postgres://postgres@%s/postgres?sslmode=disable", addr),
		Addr: addr, Dir: dir, ownDir: true,
	}
	s.start = func() (*exec.Cmd, error) {
		cmd := asPostgres(cred, postgres, "-D", data, "-p", strconv.Itoa(port), "-k", dir,
			// fsync=off survives a process kill (the OS keeps the pages);
			// synchronous_commit stays on so a Kill loses no commit.
			"-c", "listen_addresses=127.0.0.1", "-c", "fsync=off",
			"-c", "full_page_writes=off", "-c", "max_connections=200")
		logf, err := os.Create(filepath.Join(dir, "postgres.log"))
		if err == nil {
			cmd.Stdout, cmd.Stderr = logf, logf
		}
		if err := cmd.Start(); err != nil {
			return nil, err
		}
		// Generous: crash recovery after Kill on a loaded machine.
		if err := waitPostgres(s.URL, 90*time.Second); err != nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
			return nil, fmt.Errorf("postgres on %s: %w", addr, err)
		}
		return cmd, nil
	}
	if s.cmd, err = s.start(); err != nil {
		return nil, err
	}
	return s, nil
}

// waitPostgres waits until PostgreSQL accepts a session: it listens before
// it is ready ("the database system is starting up").
func waitPostgres(url string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	for {
		cctx, ccancel := context.WithTimeout(ctx, time.Second)
		conn, err := pgx.Connect(cctx, url)
		ccancel()
		if err == nil {
			conn.Close(ctx)
			return nil
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// waitTCP waits until something accepts connections on addr.
func waitTCP(addr string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	for {
		c, err := (&net.Dialer{Timeout: 200 * time.Millisecond}).DialContext(ctx, "tcp", addr)
		if err == nil {
			c.Close()
			return nil
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(20 * time.Millisecond):
		}
	}
}
