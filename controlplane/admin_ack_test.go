package controlplane

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/genproto/googleapis/rpc/status"

	"github.com/leakytokens/leaky/controlplane/model"
	"github.com/leakytokens/leaky/internal/policy"
)

// putAnswer is the answer to a PUT sent by putAsync.
type putAnswer struct {
	code int
	body string
	err  error
}

// putAsync sends a PUT in the background. A PUT answers only once every
// connected subscriber of the policy has acknowledged the change, so a
// test playing a subscriber sends it so and acknowledges meanwhile.
func (c *cp) putAsync(path, token string, body []byte) <-chan putAnswer {
	c.t.Helper()
	req := c.request(http.MethodPut, path, body)
	req.Header.Set("Authorization", "Bearer "+token)
	ch := make(chan putAnswer, 1)
	go func() {
		resp, err := (&http.Client{Timeout: wait}).Do(req)
		if err != nil {
			ch <- putAnswer{err: err}
			return
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		ch <- putAnswer{code: resp.StatusCode, body: string(b), err: err}
	}()
	return ch
}

// answer waits for the answer of putAsync.
func (c *cp) answer(ch <-chan putAnswer) (int, string) {
	c.t.Helper()
	select {
	case a := <-ch:
		if a.err != nil {
			c.t.Fatalf("PUT: %v", a.err)
		}
		return a.code, a.body
	case <-time.After(wait):
		c.t.Fatalf("no answer to the PUT within %s", wait)
	}
	return 0, ""
}

// A PUT answers once its change is in effect: in the snapshot served and
// acknowledged by every connected subscriber of the policy (the Runtime:
// ratelimit and authz), so the next request is decided by it; a node that
// does not take the Runtime (a gateway) is not waited for. A subscriber
// that NACKs the change makes the answer 202, applied false, after the
// wait.
func TestPutTierWaitsForTheSubscribers(t *testing.T) {
	is := newIssuer(t)
	c := startCP(t, testConfig(writePolicy(t, policy.Example()), is), Deps{})
	admin := is.token(t, []string{"ADMIN"}, nil)
	names := []string{model.RuntimeName}
	rl, az := dialADS(t, c.XDSAddr(), "ratelimit-1"), dialADS(t, c.XDSAddr(), "authz-1")
	rl.subscribe(resource.RuntimeType, model.RuntimeName)
	az.subscribe(resource.RuntimeType, model.RuntimeName)
	dialADS(t, c.XDSAddr(), "gateway-1").send(resource.ListenerType, nil, "", "", nil) // never ACKs
	tier := func(capacity int) []byte {
		return fmt.Appendf(nil, `{"priority":10,"roles":["USER"],"buckets":{"*":{"capacity":%d,"leak_rate":20}}}`, capacity)
	}
	notYet := func(ch <-chan putAnswer, why string) {
		t.Helper()
		select {
		case a := <-ch:
			t.Fatalf("the PUT answered %d %s %s", a.code, a.body, why)
		default:
		}
	}

	done := c.putAsync("/api/v1/admin/tiers/free", admin, tier(3000))
	pushed := rl.ack(rl.recv(), names)
	eventually(t, "ratelimit-1's ACK recorded", func() bool {
		for _, n := range c.nodes.list() {
			if ts := n.Types[resource.RuntimeType]; n.ID == "ratelimit-1" && ts != nil && ts.ACKed == pushed.GetVersionInfo() {
				return true
			}
		}
		return false
	})
	notYet(done, "before authz-1 acknowledged the change")
	az.ack(az.recv(), names)
	code, body := c.answer(done)
	var ans tierAnswer
	if err := json.Unmarshal([]byte(body), &ans); err != nil || code != http.StatusOK || !ans.Applied || ans.Version != pushed.GetVersionInfo() {
		t.Errorf("PUT acknowledged by both = %d %s, want 200 applied with version %s", code, body, pushed.GetVersionInfo())
	}

	done = c.putAsync("/api/v1/admin/tiers/free", admin, tier(3500))
	rl.ack(rl.recv(), names)
	r := az.recv()
	az.send(resource.RuntimeType, names, pushed.GetVersionInfo(), r.GetNonce(), &status.Status{Code: 3, Message: "refused by the test"})
	code, body = c.answer(done)
	if err := json.Unmarshal([]byte(body), &ans); err != nil || code != http.StatusAccepted || ans.Applied {
		t.Errorf("PUT NACKed by authz-1 = %d %s, want 202 not applied", code, body)
	}
}
