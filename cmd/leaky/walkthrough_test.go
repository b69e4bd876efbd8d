package main

import (
	"context"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/leakytokens/leaky/internal/testenv"
)

// steps splits the walk-through `leaky dev` printed into its numbered
// steps' shell commands: a step's prose is indented by three spaces, its
// commands by two, their continuation lines by more.
func steps(out string) map[int]string {
	got := map[int]string{}
	n := 0
	numbered := regexp.MustCompile(`^\d+\. `)
	for _, line := range strings.Split(out, "\n") {
		indent := len(line) - len(strings.TrimLeft(line, " "))
		switch {
		case numbered.MatchString(line):
			n++
		case n > 0 && line != "" && indent == 2 || n > 0 && indent > 3:
			got[n] += line[2:] + "\n"
		case n > 0 && indent == 0 && line != "":
			n = -1000 // past the numbered steps
		}
	}
	return got
}

// The walk-through `leaky dev` prints works as printed: its commands,
// pasted into bash one step after the other, register a user, create an
// API key, get completions from the OpenAI and Gemini stubs through the
// gateway stand-in (authz → ratelimit → provider) with rate-limit
// headers, run into a 429 with Retry-After and the JSON body, change the
// tier through the control plane's admin API and pass under the new
// limit.
// It does so with the admin password generated and printed, and with it
// in LEAKY_ADMIN_PASSWORD, which the printed commands then read.
func TestDevWalkthroughWorksAsPrinted(t *testing.T) {
	for _, tool := range []string{"bash", "curl", "sed", "grep"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is needed to paste the walk-through (make test installs it): %v", tool, err)
		}
	}
	t.Run("generated admin password", func(t *testing.T) { pasteWalkthrough(t, nil) })
	t.Run("admin password from the environment", func(t *testing.T) {
		pasteWalkthrough(t, map[string]string{"LEAKY_ADMIN_PASSWORD": "walkthrough-admin-pw"})
	})
	// With CONSUL_HTTP_ADDR (a private agent: the catalog names and the
	// policy key are the defaults) the walk-through says so, and the tier
	// change of step 6 lands in the policy key.
	t.Run("on consul", func(t *testing.T) {
		agent := testenv.StartConsul(t)
		printed := pasteWalkthrough(t, map[string]string{"CONSUL_HTTP_ADDR": "http://" + agent.Addr})
		if want := "consul        http://" + agent.Addr; !strings.Contains(printed, want) {
			t.Errorf("the walk-through does not say %q:\n%s", want, printed)
		}
		if !strings.Contains(printed, "Consul key leaky/policy is rewritten") {
			t.Errorf("step 6 does not say the tier change is written to the Consul key:\n%s", printed)
		}
		client, err := api.NewClient(&api.Config{Address: agent.Addr})
		if err != nil {
			t.Fatal(err)
		}
		pair, _, err := client.KV().Get("leaky/policy", nil)
		if err != nil || pair == nil {
			t.Fatalf("the policy key: %v, %v", pair, err)
		}
		if !strings.Contains(string(pair.Value), "openai: {capacity: 40000") {
			t.Errorf("the policy key after step 6 lacks the new tier's openai capacity 40000:\n%s", pair.Value)
		}
		// dev has stopped: every piece deregistered.
		if svcs, err := client.Agent().Services(); err != nil || len(svcs) != 0 {
			t.Errorf("the agent's services after dev stopped = %v, %v; want none", slices.Collect(maps.Keys(svcs)), err)
		}
	})
}

// pasteWalkthrough runs leaky dev with vars as its environment (and the
// shell's), pastes the walk-through, checks each step's output and
// returns what dev printed.
func pasteWalkthrough(t *testing.T, vars map[string]string) string {
	ctx, cancel := context.WithCancel(context.Background())
	var stdout, stderr syncBuffer
	done := make(chan error, 1)
	go func() { done <- run(ctx, devArgs(), testEnv(&stdout, &stderr, vars)) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("dev: %v", err)
		}
	}()
	for deadline := time.Now().Add(60 * time.Second); !strings.Contains(stdout.String(), "With Envoy installed"); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("dev did not print its walk-through within 60s; stdout:\n%s\nstderr:\n%s", stdout.String(), stderr.String())
		}
	}
	printed := stdout.String()
	st := steps(printed)
	if len(st) != 9 {
		t.Fatalf("want 9 steps, got %d:\n%s", len(st), printed)
	}
	// One bash session, so the variables of a step reach the next; each
	// step's output after a marker line.
	var script strings.Builder
	script.WriteString("set -u\n")
	for i := 1; i <= 9; i++ {
		script.WriteString("echo '=== step " + string(rune('0'+i)) + "'\n" + st[i])
	}
	file := filepath.Join(t.TempDir(), "walkthrough.sh")
	if err := os.WriteFile(file, []byte(script.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	waitReady(t, printed)
	cmd := exec.Command("bash", file)
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	for k, v := range vars {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	outb, err := cmd.CombinedOutput()
	out := string(outb)
	if err != nil {
		t.Fatalf("the walk-through failed: %v\n%s", err, out)
	}
	section := func(i int) string {
		start := strings.Index(out, "=== step "+string(rune('0'+i)))
		if start < 0 {
			t.Fatalf("no output of step %d:\n%s", i, out)
		}
		rest := out[start+len("=== step 1"):]
		if end := strings.Index(rest, "=== step "); end >= 0 {
			rest = rest[:end]
		}
		return rest
	}
	checks := []struct {
		step int
		want []string
	}{
		{1, []string{`"username":"alice"`}},
		{3, []string{"HTTP/1.1 200", "x-ratelimit-limit", `"chat.completion"`, `"usage"`}},
		{4, []string{"HTTP/1.1 200", `"usageMetadata"`}},
		{5, []string{"HTTP/1.1 200", "HTTP/1.1 429", "retry-after", `{"error":"rate_limited","scope":"user"`}},
		{6, []string{`"name":"free"`, `"applied":true`, "HTTP/1.1 200", "x-ratelimit-limit: 40000,"}},
		{7, []string{`"service":"token-service"`, `"allowed":true`, `"providerResponse"`, `"totalTokens"`, `"sagaId"`, `"status":"COMPLETED"`}},
		{8, []string{"data: [DONE]", `ratelimit_meter_settles_total{outcome="usage"}`}},
		{9, []string{"event-type=usage", "event-type=reservation-settled", "event-type=purchase", `"kind":"metered"`}},
	}
	for _, c := range checks {
		s := strings.ToLower(section(c.step))
		for _, w := range c.want {
			if !strings.Contains(s, strings.ToLower(w)) {
				t.Errorf("step %d: want %q in its output:\n%s", c.step, w, section(c.step))
			}
		}
	}
	if strings.Contains(section(8), "total_tokens") {
		t.Errorf("step 8: the usage chunk the metering asked for reached the client:\n%s", section(8))
	}
	if t.Failed() {
		t.Logf("walk-through:\n%s\nscript output:\n%s\ndev stderr:\n%s", printed, out, stderr.String())
	}
	return printed
}

// waitReady polls the gateway's /ready (printed in step 9) until the
// stand-in has applied a configuration.
func waitReady(t *testing.T, printed string) {
	t.Helper()
	m := regexp.MustCompile(`curl -s (http://\S+/ready);`).FindStringSubmatch(printed)
	if m == nil {
		t.Fatalf("no gateway /ready in the walk-through:\n%s", printed)
	}
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if err := exec.Command("curl", "-sf", "-o", "/dev/null", m[1]).Run(); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the gateway at %s was not ready within 60s", m[1])
		}
	}
}
