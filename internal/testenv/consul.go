package testenv

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"
)

// ConsulAgent is a `consul agent -dev` this package started: a single
// server that is its own leader, keeping its state in memory, on free
// loopback ports (DNS and gRPC off). Its methods are safe for concurrent
// use.
type ConsulAgent struct {
	Addr string // the HTTP API, 127.0.0.1:PORT
	Dir  string // the data directory and consul.log

	mu     sync.Mutex
	args   []string
	bin    string
	cmd    *exec.Cmd
	exited chan struct{} // closed when cmd has exited
	ownDir bool
}

// Consul returns the HTTP address (host:port) of a Consul agent shared by
// the test run: LEAKY_TEST_CONSUL_ADDR when set (`make test` starts one),
// else an agent this test binary starts on first use and stops in Main.
// Tests share its catalog and KV: each must use names of its own (Prefix).
func Consul(t testing.TB) string {
	t.Helper()
	if a := os.Getenv("LEAKY_TEST_CONSUL_ADDR"); a != "" {
		return a
	}
	shared.mu.Lock()
	defer shared.mu.Unlock()
	if shared.consul == nil && shared.errConsul == nil {
		shared.consul, shared.errConsul = startConsul("")
	}
	if shared.errConsul != nil {
		unavailable(t, "consul", shared.errConsul)
	}
	return shared.consul.Addr
}

// StartConsul starts a private agent for this test, stopped at cleanup. The
// test may Stop it and Start it again on the same ports, as a replaced
// agent: everything is gone (the -dev agent keeps its catalog and KV in
// memory, and Start empties the data directory where it would keep its own
// registrations), and its index starts again from a small number.
func StartConsul(t testing.TB) *ConsulAgent {
	t.Helper()
	a, err := startConsul(t.TempDir())
	if err != nil {
		unavailable(t, "consul", err)
	}
	t.Cleanup(a.Stop)
	return a
}

// Stop ends the agent (TERM, then KILL after 10 s) and waits for it. It
// does nothing when the agent is not running.
func (a *ConsulAgent) Stop() {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.cmd == nil {
		return
	}
	_ = a.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-a.exited:
	case <-time.After(10 * time.Second):
		_ = a.cmd.Process.Kill()
		<-a.exited
	}
	a.cmd = nil
}

// Start runs a stopped agent again on the same ports, with an empty state,
// and waits until it has a leader.
func (a *ConsulAgent) Start() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.cmd != nil {
		return errors.New("consul agent is running")
	}
	if err := os.RemoveAll(filepath.Join(a.Dir, "data")); err != nil {
		return err
	}
	return a.run()
}

func (a *ConsulAgent) shutdown() {
	a.Stop()
	if a.ownDir {
		_ = os.RemoveAll(a.Dir)
	}
}

// run starts the process and waits for a leader; a.mu is held.
func (a *ConsulAgent) run() error {
	logf, err := os.OpenFile(filepath.Join(a.Dir, "consul.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd := exec.Command(a.bin, a.args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", a.bin, err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	// Generous: a loaded machine is slow to exec a 100 MB binary.
	if err := waitLeader(a.Addr, exited, 90*time.Second); err != nil {
		_ = cmd.Process.Kill()
		<-exited
		return fmt.Errorf("consul agent on %s (log %s): %w", a.Addr, logf.Name(), err)
	}
	a.cmd, a.exited = cmd, exited
	return nil
}

func startConsul(dir string) (*ConsulAgent, error) {
	bin, err := consulBin()
	if err != nil {
		return nil, err
	}
	ownDir := dir == ""
	if ownDir {
		if dir, err = os.MkdirTemp("", "leaky-consul-"); err != nil {
			return nil, err
		}
	}
	ports, err := freePorts(4)
	if err != nil {
		return nil, err
	}
	p := func(i int) string { return strconv.Itoa(ports[i]) }
	a := &ConsulAgent{
		Addr: "127.0.0.1:" + p(0), Dir: dir, bin: bin, ownDir: ownDir,
		args: []string{"agent", "-dev", "-bind", "127.0.0.1", "-client", "127.0.0.1",
			"-http-port", p(0), "-grpc-port", "-1", "-grpc-tls-port", "-1", "-dns-port", "-1",
			"-serf-lan-port", p(1), "-serf-wan-port", p(2), "-server-port", p(3),
			"-data-dir", filepath.Join(dir, "data"), "-log-level", "warn"},
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if err := a.run(); err != nil {
		if ownDir {
			_ = os.RemoveAll(dir)
		}
		return nil, err
	}
	return a, nil
}

// consulBin finds the agent: LEAKY_TEST_CONSUL_BIN, else the binary
// scripts/deps.sh builds into its cache (scripts/consul-path.sh), else
// consul on PATH.
func consulBin() (string, error) {
	if b := os.Getenv("LEAKY_TEST_CONSUL_BIN"); b != "" {
		if _, err := os.Stat(b); err != nil {
			return "", fmt.Errorf("LEAKY_TEST_CONSUL_BIN: %w", err)
		}
		return b, nil
	}
	cached, cacheErr := consulCachePath()
	if cacheErr == nil {
		if _, cacheErr = os.Stat(cached); cacheErr == nil {
			return cached, nil
		}
	}
	if b, err := exec.LookPath("consul"); err == nil {
		return b, nil
	}
	return "", fmt.Errorf("no consul binary (LEAKY_TEST_CONSUL_BIN unset, not on PATH, built one: %v; `make deps` builds it)", cacheErr)
}

// consulCachePath is where scripts/deps.sh builds the agent, as
// scripts/consul-path.sh computes it:
// ${XDG_CACHE_HOME:-$HOME/.cache}/leaky/consul-<16 hex of sha256(tools/consul/go.sum)>/consul.
func consulCachePath() (string, error) {
	sum, err := consulWrapperSum()
	if err != nil {
		return "", err
	}
	h := sha256.Sum256(sum)
	cache := os.Getenv("XDG_CACHE_HOME")
	if cache == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			return "", err
		}
		cache = filepath.Join(home, ".cache")
	}
	return filepath.Join(cache, "leaky", "consul-"+hex.EncodeToString(h[:])[:16], "consul"), nil
}

// consulWrapperSum reads tools/consul/go.sum from the repository that
// contains the working directory (a test runs in its package's directory).
func consulWrapperSum() ([]byte, error) {
	dir, err := os.Getwd()
	if err != nil {
		return nil, err
	}
	for {
		b, err := os.ReadFile(filepath.Join(dir, "tools", "consul", "go.sum"))
		if err == nil {
			return b, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return nil, errors.New("tools/consul/go.sum not found above the working directory")
		}
		dir = parent
	}
}

// waitLeader waits until the agent at addr names a leader, failing early
// when the process exits.
func waitLeader(addr string, exited <-chan struct{}, timeout time.Duration) error {
	deadline := time.After(timeout)
	client := &http.Client{Timeout: 2 * time.Second}
	var last error
	for {
		resp, err := client.Get("http://" + addr + "/v1/status/leader")
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK && len(bytes.Trim(bytes.TrimSpace(body), `"`)) > 0 {
				return nil
			}
			err = fmt.Errorf("leader: %s %q", resp.Status, body)
		}
		last = err
		select {
		case <-exited:
			return errors.New("the agent exited")
		case <-deadline:
			return fmt.Errorf("no leader after %v: %w", timeout, last)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// freePorts returns n distinct TCP ports on 127.0.0.1 that were free a
// moment ago (all held open together, so no two are the same).
func freePorts(n int) ([]int, error) {
	var ports []int
	for range n {
		l, err := (&net.ListenConfig{}).Listen(context.Background(), "tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("find a free port: %w", err)
		}
		defer l.Close()
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}
