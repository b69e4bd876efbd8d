package main

import (
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/leakytokens/leaky/envoy/standin"
)

// The end-to-end tests of configuration changes: the control plane
// stopped and replaced, the policy file edited well and badly, a tier
// changed through the admin API; each seen at the gateway.

// freeOpenAI is the free tier's OpenAI bucket in e2ePolicy.
const freeOpenAI = "openai: {capacity: 4000, leak_rate: 0.001}"

// editPolicy is e2ePolicy with old replaced by new (which must be there).
func editPolicy(t *testing.T, old, new string) string {
	t.Helper()
	if !strings.Contains(e2ePolicy, old) {
		t.Fatalf("e2ePolicy has no %q to edit", old)
	}
	return strings.Replace(e2ePolicy, old, new, 1)
}

// writePolicy replaces the policy file in one step (a rename), as an
// editor saving it does, so the watcher never reads half a file.
func (s *stack) writePolicy(text string) {
	s.t.Helper()
	tmp := filepath.Join(filepath.Dir(s.policy), ".policy.yaml.tmp")
	if err := os.WriteFile(tmp, []byte(text), 0o644); err != nil {
		s.t.Fatal(err)
	}
	if err := os.Rename(tmp, s.policy); err != nil {
		s.t.Fatal(err)
	}
}

// waitAcked waits until the ratelimit service, authz and the gateway are
// connected to the control plane and have acknowledged version.
func (s *stack) waitAcked(adminToken, version string) {
	s.t.Helper()
	for _, n := range []struct{ cluster, typeURL string }{
		{"ratelimit", resourcev3.RuntimeType}, {"authz", resourcev3.RuntimeType}, {standin.NodeCluster, resourcev3.ListenerType},
	} {
		s.waitFor(n.cluster+" to ACK version "+version, func() (bool, string) {
			return s.snapshot(adminToken).acked(n.cluster, n.typeURL, version)
		})
	}
}

// The control plane stopped: the gateway and the ratelimit service keep
// serving their last configuration. A new control plane on the same
// addresses and policy file serves the same version (the nodes reconnect
// to it and ACK it), and a tier change through its admin API reaches the
// ratelimit service and authz.
func TestE2EControlplaneRestart(t *testing.T) {
	s := newStack(t, e2ePolicy)
	u := s.newUser("carol")
	admin := s.adminToken()
	v0 := s.d.cp.Version()
	s.waitAcked(admin, v0)

	s.stopPiece("controlplane")
	for range 2 {
		if a := s.complete(withKey(u, nil), 50); a.status != http.StatusOK || limitOf(a) != "4000" {
			t.Fatalf("control plane stopped: want 200 under the free tier's 4000, got %s", a)
		}
	}

	s.startControlplaneAgain()
	if got := s.d.cp.Version(); got != v0 {
		t.Fatalf("a new control plane on the same policy serves version %s, the old one served %s", got, v0)
	}
	if got := s.snapshot(admin).Version; got != v0 {
		t.Errorf("GET /api/v1/admin/snapshot of the new control plane: version %s, want %s", got, v0)
	}
	s.waitAcked(admin, v0)

	var put struct {
		Applied bool   `json:"applied"`
		Version string `json:"version"`
	}
	tier := `{"priority":10,"roles":["USER"],"buckets":{"*":{"capacity":2000,"leak_rate":0.001},"openai":{"capacity":5000,"leak_rate":0.001}}}`
	sent := time.Now()
	s.decode(http.StatusOK, http.MethodPut, "http://"+s.d.cp.HTTPAddr()+"/api/v1/admin/tiers/free",
		map[string]string{"Authorization": "Bearer " + admin}, tier, &put)
	answered := time.Now()
	t.Logf("the PUT answered in %v (it waits until ratelimit and authz have acknowledged the change)", answered.Sub(sent))
	if !put.Applied || put.Version == v0 || put.Version == "" {
		t.Fatalf("PUT the free tier: applied %v, version %q (was %s): want a new version in effect", put.Applied, put.Version, v0)
	}
	took := s.waitLimit(u, "5000", answered)
	t.Logf("the tier change reached the gateway's answers %v after the PUT's answer", took)
	if took > 30*time.Second {
		t.Errorf("the tier change took %v to reach the gateway's answers, want under 30s", took)
	}
	s.waitAcked(admin, put.Version)
	t.Logf("ratelimit, authz and the gateway ACKed it %v after the PUT's answer", time.Since(answered))
	if a := s.complete(withKey(u, nil), 50); a.status != http.StatusOK || limitOf(a) != "5000" {
		t.Errorf("after the tier change: want 200 under 5000, got %s", a)
	}
}

// An edit of the policy file (the free tier's OpenAI bucket) reaches the
// ratelimit service through the control plane, without a restart.
func TestE2EPolicyFileEdit(t *testing.T) {
	s := newStack(t, e2ePolicy)
	u := s.newUser("frank")
	if a := s.complete(withKey(u, nil), 50); a.status != http.StatusOK || limitOf(a) != "4000" {
		t.Fatalf("before the edit: want 200 under 4000, got %s", a)
	}
	v0 := s.d.cp.Version()

	s.writePolicy(editPolicy(t, freeOpenAI, "openai: {capacity: 6000, leak_rate: 0.001}"))
	written := time.Now()
	took := s.waitLimit(u, "6000", written)
	t.Logf("the file edit reached the gateway's answers %v after the write", took)
	if took > 30*time.Second {
		t.Errorf("the file edit took %v to reach the gateway's answers, want under 30s", took)
	}
	if v := s.d.cp.Version(); v == v0 {
		t.Errorf("the control plane still serves version %s after the edit", v)
	}
	if got := s.bucket(userBucket("openai", "free", u.id)...).GetCurrentLimit().GetRequestsPerUnit(); got != 6000 {
		t.Errorf("the ratelimit service sizes the user's bucket %d, want 6000", got)
	}
}

// An invalid edit of the policy file is refused: nothing is pushed (the
// snapshot's version stays), /readyz of the control plane says degraded
// with the reason, the gateway keeps the old limit; the valid file again
// clears it. An invalid tier through the admin API is refused with a 4xx
// naming the problem, and nothing is pushed either.
func TestE2EInvalidPolicyEditRefused(t *testing.T) {
	s := newStack(t, e2ePolicy)
	u := s.newUser("ivy")
	admin := s.adminToken()
	v0 := s.d.cp.Version()
	tests := []struct {
		name, policy, wantReason string
	}{
		{"a negative capacity", editPolicy(t, freeOpenAI, "openai: {capacity: -4000, leak_rate: 0.001}"), "tiers.free.buckets.openai.capacity -4000"},
		{"a bucket that cannot be enforced", editPolicy(t, freeOpenAI, "openai: {capacity: 1000000000000, leak_rate: 0.001}"), "cannot be represented"},
		{"YAML that does not parse", e2ePolicy + "tiers: [\n", "yaml:"},
		{"a provider the policy does not list", editPolicy(t, freeOpenAI, freeOpenAI+"\n      mistral: {capacity: 10, leak_rate: 1}"), "mistral"},
		{"a gateway setting out of range", editPolicy(t, "retries: 2", "retries: 99"), "gateway.retries 99"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := s.in(t)
			s.writePolicy(tt.policy)
			want := s.policy + ": " // the file, then the problem
			s.waitFor("/readyz degraded naming the file and "+tt.wantReason, func() (bool, string) {
				st, reasons := s.readyz()
				r := strings.Join(reasons, "\n")
				return st == "degraded" && strings.Contains(r, want) && strings.Contains(r, tt.wantReason), st + " " + r
			})
			if got := s.snapshot(admin).Version; got != v0 {
				t.Errorf("an invalid policy pushed version %s (was %s)", got, v0)
			}
			if a := s.complete(withKey(u, nil), 50); a.status != http.StatusOK || limitOf(a) != "4000" {
				t.Errorf("after an invalid edit: want 200 under the old 4000, got %s", a)
			}
			s.writePolicy(e2ePolicy)
			s.waitFor("/readyz ok with the valid policy again", func() (bool, string) {
				st, reasons := s.readyz()
				return st == "ok", st + " " + strings.Join(reasons, "; ")
			})
		})
	}
	t.Run("a tier through the admin API", func(t *testing.T) {
		s := s.in(t)
		a := s.do(http.MethodPut, "http://"+s.d.cp.HTTPAddr()+"/api/v1/admin/tiers/free", map[string]string{"Authorization": "Bearer " + admin},
			`{"priority":10,"roles":["USER"],"buckets":{"openai":{"capacity":-1,"leak_rate":0.001}}}`)
		if a.status < 400 || a.status > 499 || !strings.Contains(a.body, "capacity") {
			t.Errorf("an invalid tier: want a 4xx naming capacity, got %s", a)
		}
		if got := s.snapshot(admin).Version; got != v0 {
			t.Errorf("an invalid tier pushed version %s (was %s)", got, v0)
		}
		if data, err := os.ReadFile(s.policy); err != nil || string(data) != e2ePolicy {
			t.Errorf("an invalid tier changed the policy file (%v)", err)
		}
	})
}

// readyz is the control plane's /readyz: its status and degraded reasons.
func (s *stack) readyz() (string, []string) {
	s.t.Helper()
	a := s.do(http.MethodGet, "http://"+s.d.cp.HTTPAddr()+"/readyz", nil, "")
	var body struct {
		Status   string   `json:"status"`
		Degraded []string `json:"degraded"`
	}
	if err := json.Unmarshal([]byte(a.body), &body); err != nil {
		s.t.Fatalf("/readyz: %v in %s", err, a)
	}
	return body.Status, body.Degraded
}
