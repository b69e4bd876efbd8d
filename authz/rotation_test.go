package authz

import (
	"context"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/leakytokens/leaky/authz/oauth"
	"github.com/leakytokens/leaky/authz/store"
	"github.com/leakytokens/leaky/internal/testenv"
)

// gateStore holds the next refresh token creation until released, to stage
// a refresh that is between consuming its token and storing the new one.
type gateStore struct {
	store.Store
	mu      sync.Mutex
	armed   bool
	held    chan struct{} // closed when a creation is being held
	release chan struct{}
}

func (g *gateStore) arm() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.armed, g.held, g.release = true, make(chan struct{}), make(chan struct{})
}

func (g *gateStore) CreateToken(ctx context.Context, t store.TokenSession) error {
	g.mu.Lock()
	hold := g.armed && t.Kind == store.RefreshToken
	if hold {
		g.armed = false
	}
	held, release := g.held, g.release
	g.mu.Unlock()
	if hold {
		close(held)
		<-release
	}
	return g.Store.CreateToken(ctx, t)
}

// Reuse of a rotated-out refresh token revokes the family, including a
// refresh token that a concurrent rotation stores after the revocation; on
// the memory store and on PostgreSQL.
func TestRefreshReuseRevokesConcurrentRotation(t *testing.T) {
	t.Run("memory", func(t *testing.T) { testReuseRace(t, store.NewMemory()) })
	t.Run("postgres", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		st, err := openStore(ctx, testenv.PostgresURL(t))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(st.Close)
		testReuseRace(t, st)
	})
}

func testReuseRace(t *testing.T, st store.Store) {
	gs := &gateStore{Store: st}
	ts := startService(t, gs, nil)
	u := ts.register(t, "racer")
	refresh := func(rt string) (int, map[string]any) {
		return ts.form(t, "/oauth2/token", url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt}, "client_id": {oauth.FirstPartyClientID}}, "", "")
	}
	code, first := refresh(u.RefreshToken)
	if code != 200 {
		t.Fatalf("refresh = %d", code)
	}
	rt1 := first["refresh_token"].(string)

	gs.arm()
	type result struct {
		code int
		body map[string]any
	}
	done := make(chan result, 1)
	go func() {
		code, body := refresh(rt1) // consumes rt1, then waits to store rt2
		done <- result{code, body}
	}()
	select {
	case <-gs.held:
	case <-time.After(30 * time.Second):
		t.Fatal("the concurrent refresh never reached CreateToken within 30s")
	}
	if code, body := refresh(u.RefreshToken); code != 400 || body["error"] != "invalid_grant" {
		t.Errorf("reuse = %d %v, want 400 invalid_grant", code, body["error"])
	}
	close(gs.release)
	r := <-done
	if r.code != 200 {
		// Refusing the concurrent rotation outright is also safe.
		return
	}
	rt2 := r.body["refresh_token"].(string)
	if code, body := refresh(rt2); code == 200 {
		t.Errorf("refresh token stored after the family was revoked = %d, want refused (%v)", code, body["error"])
	}
	at2 := r.body["access_token"].(string)
	var cl clientJSON
	ts.call(t, "POST", "/api/v1/auth/clients", ts.adminToken(t), map[string]any{}, &cl)
	if _, body := ts.form(t, "/oauth2/introspect", url.Values{"token": {at2}}, cl.ClientID, cl.ClientSecret); body["active"] != false {
		t.Errorf("access token of the revoked family introspects active = %v, want false", body["active"])
	}
}
