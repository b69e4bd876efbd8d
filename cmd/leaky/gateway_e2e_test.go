package main

import (
	"net/http"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"

	"github.com/leakytokens/leaky/controlplane/model"
	"github.com/leakytokens/leaky/internal/contract"
)

// The end-to-end tests of the request path: a client's call through the
// gateway stand-in (ext_authz → ratelimit → provider), every piece of
// `leaky dev` on free ports, on the control plane's configuration.

// x-leaky-* headers a client forges, in any case and with - or _, never
// reach a descriptor: the gateway removes them before ext_authz, so the
// call is charged to the caller's own free-tier bucket by authz's
// estimate, under the caller's tier, and every other bucket stays as it
// was.
func TestE2EForgedHeadersNeverReachADescriptor(t *testing.T) {
	s := newStack(t, e2ePolicy)
	victim, caller := s.newUser("victim"), s.newUser("mallory")
	s.createOrg(victim, "victim-org")

	// A clean call: what the caller's bucket is charged for this body.
	own := userBucket("openai", "free", caller.id)
	before := s.remaining(own...)
	if a := s.complete(withKey(caller, nil), 50); a.status != http.StatusOK || limitOf(a) != "4000" {
		t.Fatalf("a clean call: want 200 under the free tier's 4000, got %s", a)
	}
	charge := before - s.remaining(own...)
	if charge <= 1 {
		t.Fatalf("a clean call charged %d tokens, want authz's estimate of prompt and max_tokens", charge)
	}

	// A user's bucket is keyed by provider and user, not tier (the tier
	// sizes it, and shows in x-ratelimit-limit).
	untouched := map[string][]string{
		"the victim's bucket":        userBucket("openai", "free", victim.id),
		"the victim's org pool":      orgPool("openai", "victim-org"),
		"the caller's gemini bucket": userBucket("gemini", "free", caller.id),
		"the gemini provider pool":   providerPool("gemini"),
		"the caller's bucket as org": orgPool("openai", caller.id),
	}
	tests := []struct {
		name   string
		forged map[string]string
	}{
		{"user id", map[string]string{contract.HeaderUserID: victim.id}},
		{"tier", map[string]string{contract.HeaderTier: "pro"}},
		{"estimate spelt with underscores", map[string]string{"X_Leaky_Estimate": "1"}},
		{"estimate", map[string]string{contract.HeaderEstimate: "1"}},
		{"org id", map[string]string{contract.HeaderOrgID: "victim-org"}},
		{"provider", map[string]string{contract.HeaderProvider: "gemini"}},
		{"mixed case and separators", map[string]string{"X-LEAKY_User-ID": victim.id, "x_leaky-TIER": "admin", "X_LEAKY_ORG_ID": "victim-org"}},
		{"all at once", map[string]string{contract.HeaderUserID: victim.id, contract.HeaderTier: "admin",
			contract.HeaderOrgID: "victim-org", contract.HeaderEstimate: "1", contract.HeaderRoles: "ADMIN"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := s.in(t)
			others, mine := s.remainingOf(untouched), s.remaining(own...)
			a := s.complete(withKey(caller, tt.forged), 50)
			if a.status != http.StatusOK {
				t.Fatalf("want 200, got %s", a)
			}
			if got := limitOf(a); got != "4000" {
				t.Errorf("x-ratelimit-limit %q: want the caller's free tier, 4000", a.header.Get("X-Ratelimit-Limit"))
			}
			if got := a.header.Get("X-Ratelimit-Limit"); strings.Contains(got, `name="org"`) {
				t.Errorf("x-ratelimit-limit %q: an org descriptor was sent", got)
			}
			if got := mine - s.remaining(own...); got != charge {
				t.Errorf("the caller's bucket was charged %d, want the estimate %d", got, charge)
			}
			if diff := cmp.Diff(others, s.remainingOf(untouched)); diff != "" {
				t.Errorf("buckets other than the caller's changed (-before +after):\n%s", diff)
			}
		})
	}
}

// An organisation member naming the organisation (x-leaky-org) charges
// its pool (provider,P)(org,O) besides the user's bucket and the
// provider's pool; a non-member naming it is refused 403 and nothing is
// charged or forwarded.
func TestE2EOrganisationPool(t *testing.T) {
	s := newStack(t, e2ePolicy)
	member, outsider := s.newUser("olivia"), s.newUser("oscar")
	s.createOrg(member, "acme")
	tests := []struct {
		name       string
		u          e2eUser
		org        string
		wantStatus int
		wantOrg    bool // the org pool charged
	}{
		{"a member naming the org", member, "acme", http.StatusOK, true},
		{"a member naming none", member, "", http.StatusOK, false},
		{"a non-member naming the org", outsider, "acme", http.StatusForbidden, false},
		{"a non-member naming an org that does not exist", outsider, "nowhere", http.StatusForbidden, false},
		{"a member naming an invalid org id", member, "ACME/../x", http.StatusForbidden, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := s.in(t)
			buckets := map[string][]string{"user": userBucket("openai", "free", tt.u.id), "org": orgPool("openai", "acme"), "provider": providerPool("openai")}
			before, stub := s.remainingOf(buckets), s.stubRequests("")
			header := map[string]string{}
			if tt.org != "" {
				header[contract.HeaderOrg] = tt.org
			}
			a := s.complete(withKey(tt.u, header), 50)
			if a.status != tt.wantStatus {
				t.Fatalf("want %d, got %s", tt.wantStatus, a)
			}
			charged := s.remainingOf(buckets)
			for name := range charged {
				charged[name] = before[name] - charged[name]
			}
			want, forwarded := map[string]uint32{"user": 0, "org": 0, "provider": 0}, 0.0
			if c := charged["user"]; tt.wantStatus == http.StatusOK {
				if c == 0 {
					t.Fatalf("the user's bucket was not charged")
				}
				want["user"], want["provider"], forwarded = c, c, 1
				if tt.wantOrg {
					want["org"] = c
				}
			} else if !strings.Contains(a.body, `"error":"forbidden_org"`) || !strings.HasPrefix(a.header.Get("Content-Type"), "application/json") {
				t.Errorf("a refusal: want authz's JSON error forbidden_org, got %s", a)
			}
			if diff := cmp.Diff(want, charged); diff != "" {
				t.Errorf("tokens charged (-want +got):\n%s", diff)
			}
			if got := s.stubRequests("") - stub; got != forwarded {
				t.Errorf("the provider saw %v requests, want %v", got, forwarded)
			}
		})
	}
}

// A refused call charges no bucket: a call over the user's bucket (429)
// leaves the user's bucket, the org pool and the provider pool as they
// were, and so does a call authz refuses (401).
func TestE2ERefusedCallChargesNoBucket(t *testing.T) {
	s := newStack(t, e2ePolicy)
	u := s.newUser("rita")
	s.createOrg(u, "rita-co")
	org := map[string]string{contract.HeaderOrg: "rita-co"}
	// The free tier's OpenAI bucket holds 4000 tokens; this call reserves
	// more than 3000 of them and, its provider reporting no usage, stays
	// charged at that estimate when metered, so the same call again is
	// over the bucket.
	first := withKey(u, org)
	first["x-stub-usage"] = "missing"
	if a := s.complete(first, 3000); a.status != http.StatusOK {
		t.Fatalf("the first call: want 200, got %s", a)
	}
	buckets := map[string][]string{
		"user": userBucket("openai", "free", u.id), "org": orgPool("openai", "rita-co"), "provider": providerPool("openai"),
	}
	tests := []struct {
		name       string
		header     map[string]string
		wantStatus int
		wantBody   string
	}{
		{"over the user's bucket", withKey(u, org), http.StatusTooManyRequests, `"scope":"user"`},
		{"a bad API key", map[string]string{contract.HeaderAPIKey: "lt_not-a-key-of-ours", contract.HeaderOrg: "rita-co"}, http.StatusUnauthorized, `"error":"`},
		{"a forged JWT", map[string]string{"Authorization": "Bearer " + u.token + "x", contract.HeaderOrg: "rita-co"}, http.StatusUnauthorized, `"error":"`},
		{"no credential", org, http.StatusUnauthorized, `"error":"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := s.in(t)
			before, stub := s.remainingOf(buckets), s.stubRequests("")
			a := s.complete(tt.header, 3000)
			if a.status != tt.wantStatus || !strings.Contains(a.body, tt.wantBody) {
				t.Fatalf("want %d with %s, got %s", tt.wantStatus, tt.wantBody, a)
			}
			if tt.wantStatus == http.StatusTooManyRequests && (a.header.Get("Retry-After") == "" || a.header.Get("X-Envoy-Ratelimited") != "true") {
				t.Errorf("a 429 without Retry-After or x-envoy-ratelimited: %v", a.header)
			}
			if diff := cmp.Diff(before, s.remainingOf(buckets)); diff != "" {
				t.Errorf("a refused call changed buckets (-before +after):\n%s", diff)
			}
			if got := s.stubRequests("") - stub; got != 0 {
				t.Errorf("the provider saw %v requests of a refused call", got)
			}
		})
	}
}

// A provider's 5xx is retried (the policy's retries: 2, so three
// attempts at most) and a 429 is not: counted at the stub and in the
// gateway's retry metric.
func TestE2EProviderRetries(t *testing.T) {
	s := newStack(t, e2ePolicy)
	u := s.newUser("ricky")
	retries := map[string]string{"cluster": model.ProviderService("openai")}
	tests := []struct {
		name         string
		knobs        map[string]string
		wantStatus   int
		wantAttempts map[string]float64 // by the stub's status
		wantRetries  float64
	}{
		{"a 5xx is retried until it succeeds", map[string]string{"x-stub-fail-first": "2"}, http.StatusOK, map[string]float64{"200": 1, "429": 0, "503": 2}, 2},
		{"retries end after the policy's two", map[string]string{"x-stub-fail-first": "5"}, http.StatusServiceUnavailable, map[string]float64{"200": 0, "429": 0, "503": 3}, 2},
		{"a 429 is not retried", map[string]string{"x-stub-status": "429", "x-stub-retry-after": "7"}, http.StatusTooManyRequests, map[string]float64{"200": 0, "429": 1, "503": 0}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := s.in(t)
			attempts := func() map[string]float64 {
				m := map[string]float64{}
				for status := range tt.wantAttempts {
					m[status] = s.stubRequests(status)
				}
				return m
			}
			before, retried := attempts(), s.metric(s.gatewayMetrics(), "leaky_gateway_upstream_retries_total", retries)
			header := withKey(u, tt.knobs)
			header["x-request-id"] = uuid.NewString() // the attempts of one request, to the stub's fail-first
			a := s.complete(header, 20)
			if a.status != tt.wantStatus {
				t.Fatalf("want %d, got %s", tt.wantStatus, a)
			}
			after := attempts()
			for status := range after {
				after[status] -= before[status]
			}
			if diff := cmp.Diff(tt.wantAttempts, after); diff != "" {
				t.Errorf("attempts at the stub by status (-want +got):\n%s", diff)
			}
			if got := s.metric(s.gatewayMetrics(), "leaky_gateway_upstream_retries_total", retries) - retried; got != tt.wantRetries {
				t.Errorf("the gateway retried %v times, want %v", got, tt.wantRetries)
			}
			if tt.wantStatus == http.StatusTooManyRequests && a.header.Get("Retry-After") != "7" {
				t.Errorf("the provider's Retry-After: want 7, got %q", a.header.Get("Retry-After"))
			}
		})
	}
}

// authz down: with authz_failure_mode deny the gateway answers 503 (its
// JSON error) and the provider sees nothing; with allow the call reaches the provider
// unmetered (no identity headers, so no descriptor and no ratelimit call).
func TestE2EAuthzDown(t *testing.T) {
	tests := []struct {
		mode       string
		wantStatus int
		wantStub   float64
	}{
		{"deny", http.StatusServiceUnavailable, 0},
		{"allow", http.StatusOK, 1},
	}
	for _, tt := range tests {
		t.Run(tt.mode, func(t *testing.T) {
			pol := strings.Replace(e2ePolicy, "authz_failure_mode: deny", "authz_failure_mode: "+tt.mode, 1)
			if tt.mode != "deny" && pol == e2ePolicy {
				t.Fatal("e2ePolicy has no authz_failure_mode to replace")
			}
			s := newStack(t, pol)
			u := s.newUser("dana")
			if a := s.complete(withKey(u, nil), 50); a.status != http.StatusOK || limitOf(a) != "4000" {
				t.Fatalf("with authz up: want 200 under the free tier, got %s", a)
			}
			s.stopPiece("authz")
			buckets := map[string][]string{"user": userBucket("openai", "free", u.id), "provider": providerPool("openai")}
			before, stub := s.remainingOf(buckets), s.stubRequests("")
			limits := s.metric(s.gatewayMetrics(), "leaky_gateway_ratelimit_total", nil)
			authzErrors := s.metric(s.gatewayMetrics(), "leaky_gateway_ext_authz_total", map[string]string{"outcome": "error"})

			a := s.complete(withKey(u, nil), 50)
			if a.status != tt.wantStatus {
				t.Fatalf("authz down, failure mode %s: want %d, got %s", tt.mode, tt.wantStatus, a)
			}
			if tt.mode == "deny" && (a.body != `{"error":"ext_authz_error","message":"","status":503}`+"\n" ||
				a.header.Get("Content-Type") != "application/json") {
				t.Errorf("authz down: want the gateway's JSON error (local_reply_config), got %s", a)
			}
			if got := s.stubRequests("") - stub; got != tt.wantStub {
				t.Errorf("the provider saw %v requests, want %v", got, tt.wantStub)
			}
			if got := s.metric(s.gatewayMetrics(), "leaky_gateway_ext_authz_total", map[string]string{"outcome": "error"}) - authzErrors; got != 1 {
				t.Errorf("ext_authz errors: want 1, got %v", got)
			}
			if got := s.metric(s.gatewayMetrics(), "leaky_gateway_ratelimit_total", nil) - limits; got != 0 {
				t.Errorf("ratelimit was called %v times without identity headers", got)
			}
			if h := a.header.Get("X-Ratelimit-Limit"); h != "" {
				t.Errorf("an unmetered call has x-ratelimit-limit %q", h)
			}
			if diff := cmp.Diff(before, s.remainingOf(buckets)); diff != "" {
				t.Errorf("buckets changed (-before +after):\n%s", diff)
			}
		})
	}
}
