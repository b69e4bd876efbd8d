package controlplane

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/golang-jwt/jwt/v5"
	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/leakytokens/leaky/controlplane/model"
	"github.com/leakytokens/leaky/internal/policy"
	"github.com/leakytokens/leaky/internal/serve"
)

// Every admin route needs an ADMIN token verified against the key set.
func TestAdminAuth(t *testing.T) {
	is := newIssuer(t)
	c := startCP(t, testConfig(writePolicy(t, policy.Example()), is), Deps{})
	other := newIssuer(t) // same kid, another key: a bad signature
	other.kid = is.kid
	tests := []struct {
		name   string
		header string
		want   int
		kind   string
	}{
		{"no token", "", 401, "unauthenticated"},
		{"not bearer", "Basic YWRtaW46YWRtaW4=", 401, "unauthenticated"},
		{"empty bearer", "Bearer ", 401, "unauthenticated"},
		{"garbage", "Bearer not.a.token", 401, "invalid_token"},
		{"bad signature", "Bearer " + other.token(t, []string{"ADMIN"}, nil), 401, "invalid_token"},
		{"expired", "Bearer " + is.token(t, []string{"ADMIN"}, func(m jwt.MapClaims) { m["exp"] = time.Now().Add(-time.Hour).Unix() }), 401, "invalid_token"},
		{"wrong audience", "Bearer " + is.token(t, []string{"ADMIN"}, func(m jwt.MapClaims) { m["aud"] = "someone-else" }), 401, "invalid_token"},
		{"not admin", "Bearer " + is.token(t, []string{"USER", "PRO"}, nil), 403, "forbidden"},
		{"admin", "Bearer " + is.token(t, []string{"USER", "ADMIN"}, nil), 200, ""},
		{"admin, lower case scheme and role", "bearer " + is.token(t, []string{"admin"}, nil), 200, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, route := range []struct{ method, path string }{{"GET", "/api/v1/admin/tiers"}, {"GET", "/api/v1/admin/snapshot"}, {"PUT", "/api/v1/admin/tiers/free"}} {
				code, body := c.callHeader(route.method, route.path, tt.header, []byte(`{"priority":10,"roles":["USER"],"buckets":{"*":{"capacity":2000,"leak_rate":20}}}`))
				var e serve.ErrorBody
				_ = json.Unmarshal([]byte(body), &e)
				if code != tt.want || (tt.kind != "" && e.Error != tt.kind) {
					t.Errorf("%s %s = %d %s, want %d %s", route.method, route.path, code, body, tt.want, tt.kind)
				}
			}
		})
	}
}

// callHeader is call with the Authorization header spelt out.
func (c *cp) callHeader(method, path, auth string, body []byte) (int, string) {
	c.t.Helper()
	if tok, ok := strings.CutPrefix(auth, "Bearer "); ok && !strings.Contains(tok, " ") && tok != "" {
		return c.call(method, path, tok, body)
	}
	req := c.request(method, path, body)
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	return c.do(req)
}

// With authz's key set unreachable a token cannot be judged: 503, not 401.
func TestAdminAuthKeySetDown(t *testing.T) {
	is := newIssuer(t)
	c := startCP(t, testConfig(writePolicy(t, policy.Example()), is), Deps{})
	tok := is.token(t, []string{"ADMIN"}, nil)
	is.srv.Close()
	if code, body := c.call("GET", "/api/v1/admin/tiers", tok, nil); code != 503 {
		t.Errorf("GET tiers with the key set down = %d %s, want 503", code, body)
	}
}

// GET tiers lists the policy's tiers in JSON.
func TestGetTiers(t *testing.T) {
	is := newIssuer(t)
	path := writePolicy(t, policy.Example())
	c := startCP(t, testConfig(path, is), Deps{})
	code, body := c.call("GET", "/api/v1/admin/tiers", is.token(t, []string{"ADMIN"}, nil), nil)
	var got tiersAnswer
	if err := json.Unmarshal([]byte(body), &got); code != 200 || err != nil {
		t.Fatalf("GET tiers = %d %s", code, body)
	}
	want := tiersAnswer{Source: path, DefaultTier: "free", Tiers: map[string]Tier{
		"free":  {Priority: 10, Roles: []string{"USER"}, Buckets: map[string]Bucket{"*": {2000, 20}, "openai": {4000, 40}}},
		"pro":   {Priority: 50, Roles: []string{"PRO"}, Buckets: map[string]Bucket{"*": {20000, 200}}},
		"admin": {Priority: 100, Roles: []string{"ADMIN"}, Buckets: map[string]Bucket{"*": {40000, 400}}},
	}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("GET tiers (-want +got):\n%s", diff)
	}
}

// comments returns every comment of a YAML text, trimmed, in order.
func comments(text string) []string {
	var out []string
	for _, m := range regexp.MustCompile(`#[^\n]*`).FindAllString(text, -1) {
		out = append(out, strings.TrimSpace(m))
	}
	return out
}

// PUT creates or replaces a tier: the file is rewritten with every comment
// kept, the change flows through the file watch into a new snapshot, and
// the answer names the version in effect.
func TestPutTier(t *testing.T) {
	is := newIssuer(t)
	path := writePolicy(t, policy.Example())
	c := startCP(t, testConfig(path, is), Deps{})
	ads := dialADS(t, c.XDSAddr(), "ratelimit-1")
	v1 := ads.subscribe(resource.RuntimeType, model.RuntimeName).GetVersionInfo()
	admin := is.token(t, []string{"ADMIN"}, nil)

	for _, step := range []struct {
		name string
		tier string
		body string
		want Tier
	}{
		{"replace", "free", `{"priority":10,"roles":["USER"],"buckets":{"*":{"capacity":2000,"leak_rate":20},"openai":{"capacity":9000,"leak_rate":0.5}}}`,
			Tier{Priority: 10, Roles: []string{"USER"}, Buckets: map[string]Bucket{"*": {2000, 20}, "openai": {9000, 0.5}}}},
		{"create", "enterprise", `{"priority":70,"roles":["ENT"],"buckets":{"*":{"capacity":1000000,"leak_rate":1000}}}`,
			Tier{Priority: 70, Roles: []string{"ENT"}, Buckets: map[string]Bucket{"*": {1000000, 1000}}}},
	} {
		before := c.pushes()
		done := c.putAsync("/api/v1/admin/tiers/"+step.tier, admin, []byte(step.body))
		r := ads.ack(ads.recv(), []string{model.RuntimeName})
		code, body := c.answer(done)
		var ans tierAnswer
		if err := json.Unmarshal([]byte(body), &ans); code != 200 || err != nil || !ans.Applied || ans.Version != c.Version() {
			t.Fatalf("%s: PUT = %d %s, want 200 applied with the version in effect %s", step.name, code, body, c.Version())
		}
		if c.pushes() != before+1 || ans.Version == v1 {
			t.Errorf("%s: pushes %v → %v, version %s: want one new push", step.name, before, c.pushes(), ans.Version)
		}
		if r.GetVersionInfo() != ans.Version {
			t.Errorf("%s: pushed version %s, PUT answered %s", step.name, r.GetVersionInfo(), ans.Version)
		}
		got := tiersOf(runtimePolicy(t, r))[step.tier]
		if diff := cmp.Diff(step.want, got); diff != "" {
			t.Errorf("%s: pushed tier (-want +got):\n%s", step.name, diff)
		}
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(comments(string(policy.Example())), comments(string(data))); diff != "" {
		t.Errorf("comments of the rewritten file (-example +file):\n%s", diff)
	}
	if p, err := policy.Parse(path, data); err != nil || p.Tiers["enterprise"].Priority != 70 {
		t.Errorf("the rewritten file: %v", err)
	}
}

// An invalid PUT is refused naming the problem: nothing is written and
// nothing pushed.
func TestPutTierInvalid(t *testing.T) {
	is := newIssuer(t)
	path := writePolicy(t, policy.Example())
	c := startCP(t, testConfig(path, is), Deps{})
	admin := is.token(t, []string{"ADMIN"}, nil)
	tests := []struct {
		name, tier, body, contentType string
		want                          int
		mentions                      string
	}{
		{"a bucket GCRA cannot represent", "free", `{"priority":10,"roles":["USER"],"buckets":{"*":{"capacity":4000000000000,"leak_rate":40}}}`, "", 422, "tiers.free"},
		{"an unknown provider", "free", `{"priority":10,"roles":["USER"],"buckets":{"anthropic":{"capacity":100,"leak_rate":1}}}`, "", 422, "anthropic"},
		{"a zero leak rate", "pro", `{"priority":50,"roles":["PRO"],"buckets":{"*":{"capacity":100,"leak_rate":0}}}`, "", 422, "leak_rate"},
		{"a tier name that cannot travel in a header", "no%20good", `{"priority":1,"roles":[],"buckets":{}}`, "", 422, "no good"},
		{"malformed JSON", "free", `{"priority":`, "", 400, "malformed"},
		{"an unknown field", "free", `{"priority":1,"roles":[],"buckets":{},"burst":3}`, "", 400, "burst"},
		{"a string for a number", "free", `{"priority":"high","roles":[],"buckets":{}}`, "", 400, "priority"},
		{"no buckets", "free", `{"priority":1,"roles":[]}`, "", 400, "buckets"},
		{"two objects", "free", `{"priority":1,"roles":[],"buckets":{}} {}`, "", 400, "after"},
		{"not JSON", "free", `priority: 1`, "text/yaml", 415, "application/json"},
		{"too large", "free", `{"priority":1,"roles":["` + strings.Repeat("A", maxTierBody) + `"],"buckets":{}}`, "", 413, "larger"},
	}
	before, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	pushes := c.pushes()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := c.request("PUT", "/api/v1/admin/tiers/"+tt.tier, []byte(tt.body))
			req.Header.Set("Authorization", "Bearer "+admin)
			if tt.contentType != "" {
				req.Header.Set("Content-Type", tt.contentType)
			}
			code, body := c.do(req)
			var e serve.ErrorBody
			if err := json.Unmarshal([]byte(body), &e); err != nil || code != tt.want || !strings.Contains(e.Message, tt.mentions) {
				t.Errorf("PUT = %d %s, want %d naming %q", code, body, tt.want, tt.mentions)
			}
		})
	}
	after, _ := os.ReadFile(path)
	if !bytes.Equal(before, after) {
		t.Errorf("the policy file changed after refused PUTs:\n%s", after)
	}
	if c.pushes() != pushes {
		t.Errorf("pushes = %v after refused PUTs, want %v", c.pushes(), pushes)
	}
}

// The embedded example cannot be edited: 409 saying how to start.
func TestPutTierExampleReadOnly(t *testing.T) {
	is := newIssuer(t)
	c := startCP(t, testConfig("", is), Deps{})
	code, body := c.call("PUT", "/api/v1/admin/tiers/free", is.token(t, []string{"ADMIN"}, nil),
		[]byte(`{"priority":10,"roles":["USER"],"buckets":{"*":{"capacity":3000,"leak_rate":20}}}`))
	if code != 409 || !strings.Contains(body, "-policy FILE") {
		t.Errorf("PUT on the embedded example = %d %s, want 409 naming -policy FILE", code, body)
	}
	if got := testutil.ToFloat64(c.m.adminRequests.WithLabelValues("tier", "409")); got != 1 {
		t.Errorf("admin_requests_total{tier,409} = %v, want 1", got)
	}
}

// A PUT survives a restart: it is in the file the next start loads.
func TestPutTierSurvivesRestart(t *testing.T) {
	is := newIssuer(t)
	path := writePolicy(t, policy.Example())
	c := startCP(t, testConfig(path, is), Deps{})
	code, body := c.call("PUT", "/api/v1/admin/tiers/pro", is.token(t, []string{"ADMIN"}, nil),
		[]byte(`{"priority":55,"roles":["PRO"],"buckets":{"*":{"capacity":30000,"leak_rate":300}}}`))
	if code != 200 {
		t.Fatalf("PUT = %d %s", code, body)
	}
	again, err := New(testConfig(path, is), discard(), Deps{})
	if err != nil {
		t.Fatal(err)
	}
	defer again.Close()
	if again.Version() != c.Version() {
		t.Errorf("version after a restart = %s, want %s", again.Version(), c.Version())
	}
	if got := again.pipeline.state().Config.Policy().Tiers["pro"].Priority; got != 55 {
		t.Errorf("pro priority after a restart = %d, want 55", got)
	}
}

// Unknown admin paths and methods get the JSON envelope.
func TestAdminUnmatched(t *testing.T) {
	is := newIssuer(t)
	c := startCP(t, testConfig("", is), Deps{})
	for _, tt := range []struct {
		method, path string
		want         int
	}{
		{"DELETE", "/api/v1/admin/tiers/free", 405},
		{"POST", "/api/v1/admin/snapshot", 405},
		{"GET", "/api/v1/admin/nothing", 404},
		{"GET", "/elsewhere", 404},
	} {
		code, body := c.call(tt.method, tt.path, is.token(t, []string{"ADMIN"}, nil), nil)
		var e serve.ErrorBody
		if err := json.Unmarshal([]byte(body), &e); err != nil || code != tt.want || e.Error == "" {
			t.Errorf("%s %s = %d %s, want %d with the JSON envelope", tt.method, tt.path, code, body, tt.want)
		}
	}
}

// In a directory the policy file is rewritten in place, beside the other
// domain files, and the change is applied like any edit.
func TestPutTierDirectory(t *testing.T) {
	is := newIssuer(t)
	dir := t.TempDir()
	other := []byte("domain: other\ndescriptors:\n  - key: k\n    rate_limit: {unit: second, requests_per_unit: 5}\n")
	for name, data := range map[string][]byte{"policy.yaml": policy.Example(), "other.yaml": other} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	c := startCP(t, testConfig(dir, is), Deps{})
	code, body := c.call("PUT", "/api/v1/admin/tiers/pro", is.token(t, []string{"ADMIN"}, nil),
		[]byte(`{"priority":50,"roles":["PRO"],"buckets":{"*":{"capacity":30000,"leak_rate":300}}}`))
	if code != 200 || !strings.Contains(body, `"applied":true`) {
		t.Fatalf("PUT in a directory = %d %s, want 200 applied", code, body)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 2 {
		t.Errorf("directory holds %d entries after the PUT, want the 2 files (no temporary left)", len(entries))
	}
	if got, _ := os.ReadFile(filepath.Join(dir, "other.yaml")); !bytes.Equal(got, other) {
		t.Errorf("other.yaml changed:\n%s", got)
	}
	if info, err := os.Stat(filepath.Join(dir, "policy.yaml")); err != nil || info.Mode().Perm() != 0o600 {
		t.Errorf("policy.yaml after the PUT: %v, %v; want mode 0600 kept", info.Mode(), err)
	}
	if got := c.pipeline.state().Config.Policy().Tiers["pro"].Buckets["*"].Capacity; got != 30000 {
		t.Errorf("pro * capacity in effect = %d, want 30000", got)
	}
}
