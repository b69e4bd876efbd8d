package standin

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/leakytokens/leaky/controlplane/model"
)

func TestRoutingRewritesAndNormalises(t *testing.T) {
	openai, qwen := newRecorder(t), newRecorder(t)
	f := defaultFixture()
	f.endpoints[model.ProviderService("openai")] = []string{openai.addr()}
	f.endpoints[model.ProviderService("qwen")] = []string{qwen.addr()}
	h := newHarness(t, f)
	h.pushAndWait("v1", h.fix, nil)
	for _, tc := range []struct {
		path     string
		up       *recorder
		wantURI  string
		wantCode int
	}{
		{"/openai/v1/chat/completions?stream=1", openai, "/v1/chat/completions?stream=1", 200},
		{"/qwen/v1/chat/completions", qwen, "/compatible-mode/v1/chat/completions", 200},
		{"/api/v1/openai/chat", openai, "/api/v1/openai/chat", 200},
		{"/openai/../openai/v1/./models", openai, "/v1/models", 200},
		{"//openai///v1//models", openai, "/v1/models", 200},
		{"/openai/v1/%6Dodels", openai, "/v1/models", 200},
		{"/openai/v1/a%2fb", nil, "", 400},
		{"/openai/v1/a%5Cb", nil, "", 400},
		{"/nowhere", nil, "", 404},
	} {
		before := 0
		if tc.up != nil {
			before = len(tc.up.requests())
		}
		resp, _ := h.rawGet(tc.path)
		if resp.StatusCode != tc.wantCode {
			t.Errorf("GET %s = %d, want %d", tc.path, resp.StatusCode, tc.wantCode)
			continue
		}
		if tc.up == nil {
			continue
		}
		got := tc.up.requests()
		if len(got) != before+1 || got[before].uri != tc.wantURI {
			t.Errorf("GET %s reached the upstream as %+v, want %s", tc.path, got[before:], tc.wantURI)
		}
		if orig := got[before].header.Get("X-Envoy-Original-Path"); tc.path != "/api/v1/openai/chat" && orig == "" {
			t.Errorf("GET %s: no x-envoy-original-path on a rewritten path", tc.path)
		}
		if resp.Header.Get("X-Envoy-Upstream-Service-Time") == "" {
			t.Errorf("GET %s: no x-envoy-upstream-service-time", tc.path)
		}
		if got[before].header.Get("X-Envoy-Expected-Rq-Timeout-Ms") != "30000" {
			t.Errorf("GET %s: x-envoy-expected-rq-timeout-ms = %q", tc.path, got[before].header.Get("X-Envoy-Expected-Rq-Timeout-Ms"))
		}
	}
}

// rawGet sends the path exactly as written (no client-side cleaning).
func (h *harness) rawGet(path string) (*http.Response, string) {
	h.t.Helper()
	return h.raw("GET " + path + " HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n")
}

func TestRetriesOn5xxNeverOn429(t *testing.T) {
	h, rec := providerHarness(t, defaultFixture())
	var calls atomic.Int32
	rec.setHandler(func(w http.ResponseWriter, _ *http.Request) {
		if calls.Add(1) == 1 {
			w.WriteHeader(http.StatusInternalServerError)
			return
		}
		io.WriteString(w, "second time lucky")
	})
	resp, body := h.do("POST", "/openai/v1/chat/completions", nil, `{"replay":"me"}`)
	if resp.StatusCode != 200 || body != "second time lucky" {
		t.Fatalf("answer = %d %q, want the retry's 200", resp.StatusCode, body)
	}
	got := rec.requests()
	if len(got) != 2 || got[0].body != `{"replay":"me"}` || got[1].body != `{"replay":"me"}` {
		t.Fatalf("upstream got %+v, want the body twice", got)
	}

	calls.Store(0)
	rec.setHandler(func(w http.ResponseWriter, _ *http.Request) {
		calls.Add(1)
		w.Header().Set("Retry-After", "3")
		w.WriteHeader(http.StatusTooManyRequests)
	})
	resp, _ = h.do("POST", "/openai/v1/chat/completions", nil, `{}`)
	if resp.StatusCode != 429 || resp.Header.Get("Retry-After") != "3" || calls.Load() != 1 {
		t.Errorf("a 429 answered %d after %d calls, want 429 after 1", resp.StatusCode, calls.Load())
	}

	calls.Store(0)
	rec.setHandler(func(w http.ResponseWriter, _ *http.Request) {
		calls.Add(1)
		w.WriteHeader(http.StatusBadGateway)
	})
	resp, _ = h.do("POST", "/openai/v1/chat/completions", nil, `{}`)
	if resp.StatusCode != 502 || calls.Load() != 3 {
		t.Errorf("always 502: answered %d after %d calls, want 502 after 3 (2 retries)", resp.StatusCode, calls.Load())
	}
}

func TestConnectFailureIsRetriedOnAnotherEndpoint(t *testing.T) {
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := closed.Addr().String()
	closed.Close()
	rec := newRecorder(t)
	f := defaultFixture()
	f.endpoints[model.ProviderService("openai")] = []string{dead, rec.addr()}
	h := newHarness(t, f)
	h.pushAndWait("v1", h.fix, nil)
	for i := range 4 {
		if resp, _ := h.do("GET", "/openai/v1/models", nil, ""); resp.StatusCode != 200 {
			t.Errorf("request %d = %d, want 200 (the dead endpoint retried away)", i, resp.StatusCode)
		}
	}
}

func TestRouteTimeoutIs504(t *testing.T) {
	f := defaultFixture()
	f.upstreamTimeout = 300 * time.Millisecond
	h, rec := providerHarness(t, f)
	release := make(chan struct{})
	defer close(release)
	rec.setHandler(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	})
	resp, body := h.do("GET", "/openai/v1/models", nil, "")
	if want := jsonReply("response_timeout", bodyTimeout, 504); resp.StatusCode != http.StatusGatewayTimeout || body != want {
		t.Errorf("answer = %d %q, want 504 %q", resp.StatusCode, body, want)
	}
}

func TestNoEndpointsIs503(t *testing.T) {
	h, _ := providerHarness(t, defaultFixture())
	resp, body := h.do("GET", "/api/v1/analytics/usage", nil, "")
	if want := jsonReply("no_healthy_upstream", bodyNoHealthyUpstream, 503); resp.StatusCode != http.StatusServiceUnavailable || body != want {
		t.Errorf("answer = %d %q, want 503 %q", resp.StatusCode, body, want)
	}
}

func TestServerSentEventsStreamAsTheyCome(t *testing.T) {
	h, rec := providerHarness(t, defaultFixture())
	second := make(chan struct{})
	rec.setHandler(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, "data: one\n\n")
		w.(http.Flusher).Flush()
		select { // the second event waits until the client has the first
		case <-second:
			io.WriteString(w, "data: two\n\ndata: [DONE]\n\n")
		case <-time.After(waitBound):
			io.WriteString(w, "data: the first event never reached the client on its own\n\n")
		}
	})
	resp, err := h.client.Post(h.base+"/openai/v1/chat/completions", "application/json", strings.NewReader(`{"stream":true}`))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	r := bufio.NewReader(resp.Body)
	first, err := r.ReadString('\n')
	if err != nil || first != "data: one\n" {
		t.Fatalf("first line = %q, %v", first, err)
	}
	close(second)
	rest, err := io.ReadAll(r)
	if err != nil || string(rest) != "\ndata: two\n\ndata: [DONE]\n\n" {
		t.Errorf("rest = %q, %v", rest, err)
	}
}

// editCluster changes one cluster of a snapshot.
func editCluster(name string, edit func(*clusterv3.Cluster)) func(map[string][]types.Resource) {
	return func(res map[string][]types.Resource) {
		for _, r := range res[resourcev3.ClusterType] {
			if c := r.(*clusterv3.Cluster); c.GetName() == name {
				edit(c)
			}
		}
	}
}

func TestCircuitBreakerMaxRequestsIs503(t *testing.T) {
	rec := newRecorder(t)
	f := defaultFixture()
	f.endpoints[model.ProviderService("openai")] = []string{rec.addr()}
	h := newHarness(t, f)
	h.pushAndWait("v1", h.fix, editCluster(model.ProviderService("openai"), func(c *clusterv3.Cluster) {
		c.CircuitBreakers.Thresholds[0].MaxRequests = wrapperspb.UInt32(1)
	}))
	entered, release := make(chan struct{}), make(chan struct{})
	rec.setHandler(func(w http.ResponseWriter, _ *http.Request) {
		entered <- struct{}{}
		<-release
	})
	first := make(chan int)
	go func() {
		resp, _ := h.do("GET", "/openai/v1/models", nil, "")
		first <- resp.StatusCode
	}()
	<-entered
	resp, _ := h.do("GET", "/openai/v1/models", nil, "")
	close(release)
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("X-Envoy-Overloaded") != "true" {
		t.Errorf("the second concurrent request = %d %v, want 503 overloaded", resp.StatusCode, resp.Header)
	}
	if code := <-first; code != 200 {
		t.Errorf("the first request = %d, want 200", code)
	}
}

func TestOutlierDetectionEjectsAFailingEndpoint(t *testing.T) {
	good, bad := newRecorder(t), newRecorder(t)
	bad.setHandler(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusInternalServerError) })
	f := defaultFixture()
	f.retries = 0
	f.endpoints[model.ProviderService("openai")] = []string{good.addr(), bad.addr()}
	h := newHarness(t, f)
	h.pushAndWait("v1", h.fix, nil)
	for range 10 { // round robin: 5 reach the bad endpoint, which then is ejected
		h.do("GET", "/openai/v1/models", nil, "")
	}
	if n := len(bad.requests()); n != 5 {
		t.Fatalf("the bad endpoint got %d requests, want 5", n)
	}
	for i := range 6 {
		if resp, _ := h.do("GET", "/openai/v1/models", nil, ""); resp.StatusCode != 200 {
			t.Errorf("request %d after the ejection = %d, want 200", i, resp.StatusCode)
		}
	}
	if n := len(bad.requests()); n != 5 {
		t.Errorf("the ejected endpoint got %d requests, want still 5", n)
	}
}

// A retry holds its max_retries slot until its attempt is over (Envoy
// counts retries in flight): while one request's retry waits on the
// upstream, another request's failure is not retried.
func TestRetrySlotIsHeldForTheAttempt(t *testing.T) {
	rec := newRecorder(t)
	f := defaultFixture()
	f.endpoints[model.ProviderService("openai")] = []string{rec.addr()}
	h := newHarness(t, f)
	h.pushAndWait("v1", h.fix, editCluster(model.ProviderService("openai"), func(c *clusterv3.Cluster) {
		c.CircuitBreakers.Thresholds[0].MaxRetries = wrapperspb.UInt32(1)
	}))
	var callsA, callsB atomic.Int32
	retrying, release := make(chan struct{}), make(chan struct{})
	rec.setHandler(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("X-Test") == "b" {
			callsB.Add(1)
			w.WriteHeader(http.StatusInternalServerError)
			return
		}
		if callsA.Add(1) == 1 {
			w.WriteHeader(http.StatusInternalServerError)
			return
		}
		close(retrying)
		<-release
	})
	first := make(chan int)
	go func() {
		resp, _ := h.do("GET", "/openai/v1/models", http.Header{"X-Test": {"a"}}, "")
		first <- resp.StatusCode
	}()
	select {
	case <-retrying:
	case <-time.After(waitBound):
		t.Fatal("the first request was not retried")
	}
	resp, _ := h.do("GET", "/openai/v1/models", http.Header{"X-Test": {"b"}}, "")
	close(release)
	if resp.StatusCode != http.StatusInternalServerError || callsB.Load() != 1 {
		t.Errorf("with the only retry slot in use: %d after %d calls, want 500 after 1", resp.StatusCode, callsB.Load())
	}
	if code := <-first; code != http.StatusOK {
		t.Errorf("the retried request = %d, want 200", code)
	}
}
