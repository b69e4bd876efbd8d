package testenv

import (
	"io"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
)

// get returns the status and body of GET http://addr+path.
func get(t *testing.T, addr, path string) (int, string, error) {
	t.Helper()
	resp, err := http.Get("http://" + addr + path)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

func TestConsulHasALeader(t *testing.T) {
	addr := Consul(t)
	code, body, err := get(t, addr, "/v1/status/leader")
	if err != nil || code != http.StatusOK || len(strings.Trim(body, "\"\n")) == 0 {
		t.Fatalf("GET /v1/status/leader = %d %q, %v, want a leader", code, body, err)
	}
}

func put(t *testing.T, addr, path, body string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPut, "http://"+addr+path, strings.NewReader(body))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("PUT %s: %v", path, err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("PUT %s = %s", path, resp.Status)
	}
}

// TestConsulStopStart: a private agent stops (nothing answers) and starts
// again on the same address with its KV and catalog empty.
func TestConsulStopStart(t *testing.T) {
	a := StartConsul(t)
	put(t, a.Addr, "/v1/kv/leaky-test/k", "v")
	put(t, a.Addr, "/v1/agent/service/register", `{"Name": "leaky-test", "Port": 9}`)
	for _, path := range []string{"/v1/kv/leaky-test/k", "/v1/agent/service/leaky-test"} {
		if code, _, _ := get(t, a.Addr, path); code != http.StatusOK {
			t.Fatalf("GET %s = %d, want 200", path, code)
		}
	}

	a.Stop()
	if _, _, err := get(t, a.Addr, "/v1/status/leader"); err == nil {
		t.Fatal("the agent answers after Stop")
	}
	if err := a.Start(); err != nil {
		t.Fatalf("Start: %v", err)
	}
	if err := a.Start(); err == nil {
		t.Error("Start of a running agent = nil error, want one")
	}
	for _, path := range []string{"/v1/kv/leaky-test/k", "/v1/agent/service/leaky-test"} {
		if code, _, err := get(t, a.Addr, path); err != nil || code != http.StatusNotFound {
			t.Errorf("GET %s after a restart = %d, %v, want 404 (the state is gone)", path, code, err)
		}
	}
}

// TestConsulCachePathMatchesTheScript: the test harness looks for the agent
// where scripts/deps.sh builds it.
func TestConsulCachePathMatchesTheScript(t *testing.T) {
	for _, xdg := range []string{"", t.TempDir()} {
		t.Setenv("XDG_CACHE_HOME", xdg)
		out, err := exec.Command("bash", "../../scripts/consul-path.sh").Output()
		if err != nil {
			t.Fatalf("scripts/consul-path.sh: %v", err)
		}
		got, err := consulCachePath()
		if err != nil {
			t.Fatal(err)
		}
		if want := strings.TrimSpace(string(out)); got != want {
			t.Errorf("XDG_CACHE_HOME=%q: consulCachePath() = %q, scripts/consul-path.sh says %q", xdg, got, want)
		}
	}
}

// TestConsulWrapperStaysMPL: the agent is built from Consul v1.14.11, the
// last line before the BUSL licence, and its module graph holds neither of
// the modules DESIGN §7 rules out.
func TestConsulWrapperStaysMPL(t *testing.T) {
	sum, err := consulWrapperSum()
	if err != nil {
		t.Fatal(err)
	}
	mod, err := os.ReadFile("../../tools/consul/go.mod")
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`(?m)^\s*github\.com/hashicorp/consul v1\.14\.11$`).Match(mod) {
		t.Errorf("tools/consul/go.mod does not require github.com/hashicorp/consul v1.14.11:\n%s", mod)
	}
	for _, banned := range []string{"github.com/hashicorp/consul/envoyextensions", "github.com/hashicorp/consul/troubleshoot"} {
		if strings.Contains(string(sum), banned) || strings.Contains(string(mod), banned) {
			t.Errorf("tools/consul depends on %s", banned)
		}
	}
}
