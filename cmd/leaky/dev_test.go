package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// devArgs is `leaky dev` with every listener on a free loopback port (the
// defaults may be taken on a shared machine) and the given flags.
func devArgs(extra ...string) []string {
	args := []string{"dev"}
	for _, f := range []string{"ratelimit-grpc-addr", "ratelimit-http-addr", "authz-grpc-addr", "authz-http-addr",
		"xds-addr", "controlplane-http-addr", "openai-addr", "gemini-addr", "qwen-addr", "gateway-addr", "gateway-admin-addr", "kafka-addr"} {
		args = append(args, "-"+f, "127.0.0.1:0")
	}
	return append(append(args, "-gateway", "standin"), extra...)
}

// devPolicy is testdata/policy.yaml with a provider the embedded example
// lacks, so that authz naming it proves authz read the directory.
func devPolicy(t *testing.T) string {
	t.Helper()
	data, err := os.ReadFile("testdata/policy.yaml")
	if err != nil {
		t.Fatal(err)
	}
	pol := strings.Replace(string(data), "providers:\n", "providers:\n  mistral: {capacity: 7000, leak_rate: 70}\n", 1)
	if pol == string(data) {
		t.Fatal("testdata/policy.yaml has no providers: section to add mistral to")
	}
	return pol
}

// `leaky dev -config DIR` with DIR holding the policy and an
// envoyproxy/ratelimit domain file: both services start on the one
// loader, authz from the policy in DIR, ratelimit serving both domains.
func TestDevConfigDirectory(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("policy.yaml", devPolicy(t))
	write("messaging.yaml", "domain: messaging\ndescriptors:\n  - key: queue\n    rate_limit: {unit: hour, requests_per_unit: 3}\n")

	ctx, cancel := context.WithCancel(context.Background())
	var stdout, stderr syncBuffer
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, devArgs("-config", dir), testEnv(&stdout, &stderr, map[string]string{"LEAKY_ADMIN_PASSWORD": "dev-admin-password"}))
	}()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("dev: %v", err)
		}
	}()
	addrs := regexp.MustCompile(`authz\s+gRPC (\S+)\s+HTTP http://(\S+).*\n\s+ratelimit\s+gRPC (\S+)`)
	var m []string
	for deadline := time.Now().Add(60 * time.Second); m == nil; time.Sleep(20 * time.Millisecond) {
		if m = addrs.FindStringSubmatch(stdout.String()); m == nil && time.Now().After(deadline) {
			t.Fatalf("dev -config %s did not start within 60s; stdout:\n%s\nstderr:\n%s", dir, stdout.String(), stderr.String())
		}
	}
	azGRPC, azHTTP, rlGRPC := m[1], m[2], m[3]
	if !strings.Contains(stdout.String(), "policy        "+dir) {
		t.Errorf("the walk-through does not name the configuration directory:\n%s", stdout.String())
	}

	var out bytes.Buffer
	rlcheck := func(args ...string) string {
		t.Helper()
		out.Reset()
		if err := run(ctx, append([]string{"rlcheck", "-addr", rlGRPC}, args...), testEnv(&out, &out, nil)); err != nil {
			t.Fatalf("rlcheck %v: %v\n%s", args, err, out.String())
		}
		return out.String()
	}
	// The directory's policy: the free tier's bucket is 1000 tokens.
	if got := rlcheck("-d", "provider=openai,tier=free,user=alice", "-hits", "100"); !strings.Contains(got, `"limitRemaining": 900`) {
		t.Errorf("leaky-tokens from the directory's policy: want 900 of 1000 left:\n%s", got)
	}
	// The directory's other domain.
	for range 3 {
		rlcheck("-domain", "messaging", "-d", "queue=q1")
	}
	if got := rlcheck("-domain", "messaging", "-d", "queue=q1"); !strings.Contains(got, "OVER_LIMIT") {
		t.Errorf("the fourth messaging request of 3 per hour: want OVER_LIMIT:\n%s", got)
	}

	// authz names mistral, a provider only the directory's policy lists.
	reg, err := json.Marshal(map[string]string{"username": "dora", "email": "dora@example.com", "password": "correct-horse-battery"})
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.Post("http://"+azHTTP+"/api/v1/auth/register", "application/json", bytes.NewReader(reg))
	if err != nil {
		t.Fatal(err)
	}
	var session struct {
		Token string `json:"token"`
	}
	err = json.NewDecoder(resp.Body).Decode(&session)
	resp.Body.Close()
	if err != nil || session.Token == "" {
		t.Fatalf("register: status %d, %v", resp.StatusCode, err)
	}
	out.Reset()
	if err := run(ctx, []string{"authcheck", "-addr", azGRPC, "-path", "/mistral/v1/chat/completions",
		"-H", "authorization: Bearer " + session.Token, "-body", `{"max_tokens":10}`}, testEnv(&out, &out, nil)); err != nil {
		t.Fatalf("authcheck: %v", err)
	}
	if !regexp.MustCompile(`"x-leaky-provider"[^}]*"mistral"`).MatchString(out.String()) {
		t.Logf("%s", out.String())
		t.Errorf("authcheck /mistral/…: want x-leaky-provider mistral from the directory's policy")
	}
}

// A directory whose policy cannot be enforced stops `leaky dev` with the
// file and the bucket named.
func TestDevRefusesUnenforceablePolicy(t *testing.T) {
	dir := t.TempDir()
	good := devPolicy(t)
	pol := strings.Replace(good, `"*": {capacity: 1000, leak_rate: 0.001}`, `"*": {capacity: 1000000000000, leak_rate: 0.001}`, 1)
	if pol == good {
		t.Fatal("the example policy no longer has the bucket this test makes unenforceable")
	}
	file := filepath.Join(dir, "policy.yaml")
	if err := os.WriteFile(file, []byte(pol), 0o644); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	// A bound, in case dev started after all: it would serve until then.
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	err := run(ctx, devArgs("-config", dir), testEnv(&out, &out, nil))
	if err == nil || !strings.Contains(err.Error(), file+": tiers.free.buckets.*: capacity 1000000000000 at leak_rate 0.001 cannot be represented") {
		t.Errorf("dev with an unenforceable policy = %v, want a refusal naming the file and the bucket", err)
	}
}

// `leaky dev -gateway-addr :0` (every interface) starts: the control plane
// is told the bound address, whatever host the flag named; a standalone
// `leaky controlplane -listener` with port 0 is refused (nothing would set it).
func TestDevGatewayOnEveryInterface(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	var stdout, stderr syncBuffer
	done := make(chan error, 1)
	go func() { done <- run(ctx, devArgs("-gateway-addr", ":0"), testEnv(&stdout, &stderr, nil)) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("dev: %v", err)
		}
	}()
	gw := regexp.MustCompile(`gateway\s+http://\[::\]:(\d+)`)
	var m []string
	for deadline := time.Now().Add(60 * time.Second); m == nil; time.Sleep(20 * time.Millisecond) {
		if m = gw.FindStringSubmatch(stdout.String()); m == nil && time.Now().After(deadline) {
			t.Fatalf("dev -gateway-addr :0 did not start within 60s: stdout:\n%s\nstderr:\n%s", stdout.String(), stderr.String())
		}
	}
	url := "http://127.0.0.1:" + m[1] + "/openai/v1/models"
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusUnauthorized { // configured: authz answered
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET %s never reached authz through the gateway (last: %v)", url, err)
		}
	}

	var out bytes.Buffer
	err := run(context.Background(), []string{"controlplane", "-listener", "0.0.0.0:0", "-xds-addr", "127.0.0.1:0", "-http-addr", "127.0.0.1:0"}, testEnv(&out, &out, nil))
	if err == nil || !strings.Contains(err.Error(), "-listener 0.0.0.0:0") {
		t.Errorf("controlplane -listener 0.0.0.0:0 = %v, want a refusal naming it", err)
	}
}
