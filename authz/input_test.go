package authz

import (
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/leakytokens/leaky/internal/serve"
	"github.com/leakytokens/leaky/internal/testenv"
)

// raw sends body as is (with contentType when not empty) and returns the
// status and the body of the answer.
func (ts *testService) raw(t testing.TB, method, path, bearer, contentType string, body io.Reader) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, ts.base+path, body)
	if err != nil {
		t.Fatalf("NewRequest(%s %s): %v", method, path, err)
	}
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, data
}

// hostileCase is one request a hostile client may send: who sends it
// ("" anonymous, "user", "admin") and its method, path and raw body.
type hostileCase struct {
	name, as, method, path, body string
}

// hostileText lists a request for every text input of the HTTP API that
// reaches the store (body fields, path segments, query parameters), each
// with a NUL or with bytes that are not UTF-8.
func hostileText(userID, keyID string) []hostileCase {
	return []hostileCase{
		{"register username NUL", "", "POST", "/api/v1/auth/register", `{"username":"a\u0000bcd","email":"n@example.com","password":"password-123"}`},
		{"register email NUL", "", "POST", "/api/v1/auth/register", `{"username":"nulmail","email":"a\u0000b@example.com","password":"password-123"}`},
		{"register password NUL", "", "POST", "/api/v1/auth/register", `{"username":"nulpass","email":"np@example.com","password":"pass\u0000word-123"}`},
		{"register raw bytes not UTF-8", "", "POST", "/api/v1/auth/register", "{\"username\":\"abc\xff\",\"email\":\"x@example.com\",\"password\":\"password-123\"}"},
		{"login username NUL", "", "POST", "/api/v1/auth/login", `{"username":"a\u0000b","password":"password-123"}`},
		{"login username not UTF-8", "", "POST", "/api/v1/auth/login", "{\"username\":\"a\xffb\",\"password\":\"password-123\"}"},
		{"api key name NUL", "user", "POST", "/api/v1/auth/api-keys", `{"name":"k\u0000ey"}`},
		{"api key name control", "user", "POST", "/api/v1/auth/api-keys", `{"name":"k\u001b[31mey"}`},
		{"api key userId NUL", "admin", "POST", "/api/v1/auth/api-keys", `{"userId":"u\u0000","name":"k"}`},
		{"org name NUL", "user", "POST", "/api/v1/auth/orgs", `{"id":"nul-org","name":"Acme\u0000"}`},
		{"org id NUL", "user", "POST", "/api/v1/auth/orgs", `{"id":"a\u0000b","name":"Acme"}`},
		{"member userId NUL", "admin", "POST", "/api/v1/auth/orgs/acme/members", `{"userId":"u\u0000"}`},
		{"client orgId NUL", "user", "POST", "/api/v1/auth/clients", `{"orgId":"a\u0000"}`},
		{"role NUL", "admin", "POST", "/api/v1/auth/users/" + userID + "/roles", `{"role":"AB\u0000"}`},
		{"path %ff user id", "admin", "POST", "/api/v1/auth/users/%ff/roles", `{"role":"PRO"}`},
		{"path %00 user id", "admin", "POST", "/api/v1/auth/users/a%00b/roles", `{"role":"PRO"}`},
		{"path %ff role", "admin", "DELETE", "/api/v1/auth/users/" + userID + "/roles/%ff", ""},
		{"path %ff org", "user", "GET", "/api/v1/auth/orgs/%ff/members", ""},
		{"path %00 member", "admin", "DELETE", "/api/v1/auth/orgs/acme/members/%00", ""},
		{"path %ff api key", "user", "DELETE", "/api/v1/auth/api-keys/%ff", ""},
		{"query %ff userId", "admin", "GET", "/api/v1/auth/api-keys?userId=%ff", ""},
		{"query %00 apiKeyId", "user", "DELETE", "/api/v1/auth/api-keys?apiKeyId=" + keyID + "%00", ""},
		{"query malformed", "user", "GET", "/api/v1/auth/api-keys?userId=%zz", ""},
		{"trailing data", "", "POST", "/api/v1/auth/register", `{"username":"trail","email":"t@example.com","password":"password-123"} garbage`},
		{"second JSON value", "", "POST", "/api/v1/auth/login", `{"username":"admin","password":"admin-password-123"}{}`},
	}
}

// TestHostileTextIs400: every text input with a NUL, bytes that are not
// UTF-8, or data after the JSON value is a 400 with the JSON error body,
// never a 5xx, and logs no error; on memory and on PostgreSQL, whose text
// type refuses NUL and invalid UTF-8.
func TestHostileTextIs400(t *testing.T) {
	for _, backend := range []string{"memory", "postgres"} {
		t.Run(backend, func(t *testing.T) {
			var ts *testService
			if backend == "memory" {
				ts = startService(t, nil, nil)
			} else {
				ts, _ = startPG(t, testenv.PostgresURL(t), nil)
			}
			u := ts.register(t, "hostile")
			key := ts.newKey(t, u.Token, nil)
			admin := ts.adminToken(t)
			if code := ts.call(t, "POST", "/api/v1/auth/orgs", admin, map[string]string{"id": "acme"}, nil); code != http.StatusCreated {
				t.Fatalf("create org = %d", code)
			}
			tokens := map[string]string{"user": u.Token, "admin": admin}
			for _, c := range hostileText(u.UserID, key.ID) {
				code, body := ts.raw(t, c.method, c.path, tokens[c.as], "application/json", strings.NewReader(c.body))
				var e serve.ErrorBody
				if code != http.StatusBadRequest || json.Unmarshal(body, &e) != nil || e.Error != "invalid_request" || e.Message == "" {
					t.Errorf("%s: %s %s = %d %q, want 400 with the JSON error body", c.name, c.method, c.path, code, body)
				}
			}
			if strings.Contains(ts.logs.String(), `"level":"ERROR"`) {
				t.Errorf("hostile input logged an error:\n%s", tail(ts.logs.String(), 2000))
			}
		})
	}
}

// TestLengthsCountCharacters: the limits the messages state in characters
// count characters (runes), not bytes.
func TestLengthsCountCharacters(t *testing.T) {
	ts := startService(t, nil, nil)
	u := ts.register(t, "counter")
	for _, c := range []struct {
		name, path string
		in         map[string]any
		want       int
	}{
		{"password of 3 three-byte characters", "/api/v1/auth/register", map[string]any{"username": "euro3", "email": "e3@example.com", "password": "€€€"}, 400},
		{"password of 8 three-byte characters", "/api/v1/auth/register", map[string]any{"username": "euro8", "email": "e8@example.com", "password": strings.Repeat("€", 8)}, 201},
		{"password of 256 three-byte characters", "/api/v1/auth/register", map[string]any{"username": "euro256", "email": "e256@example.com", "password": strings.Repeat("€", maxPasswordLen)}, 201},
		{"password of 257 characters", "/api/v1/auth/register", map[string]any{"username": "euro257", "email": "e257@example.com", "password": strings.Repeat("€", maxPasswordLen+1)}, 400},
		{"key name of 100 two-byte characters", "/api/v1/auth/api-keys", map[string]any{"name": strings.Repeat("é", 100)}, 201},
		{"key name of 101 characters", "/api/v1/auth/api-keys", map[string]any{"name": strings.Repeat("é", 101)}, 400},
		{"org name of 200 two-byte characters", "/api/v1/auth/orgs", map[string]any{"id": "long-name", "name": strings.Repeat("é", 200)}, 201},
		{"org name of 201 characters", "/api/v1/auth/orgs", map[string]any{"id": "longer-name", "name": strings.Repeat("é", 201)}, 400},
	} {
		if code := ts.call(t, "POST", c.path, u.Token, c.in, nil); code != c.want {
			t.Errorf("%s: POST %s = %d, want %d", c.name, c.path, code, c.want)
		}
	}
	// A password of 256 multi-byte characters that registered also logs in.
	in := map[string]string{"username": "euro256", "password": strings.Repeat("€", maxPasswordLen)}
	if code := ts.call(t, "POST", "/api/v1/auth/login", "", in, nil); code != http.StatusOK {
		t.Errorf("login with a 256-character password = %d, want 200", code)
	}
}

// TestOAuthBodiesBounded: a form over the body bound on an OAuth2 endpoint
// is 413 with the RFC 6749 JSON error, and a form value or client id with a
// NUL or bytes that are not UTF-8 is 400 invalid_request.
func TestOAuthBodiesBounded(t *testing.T) {
	ts := startService(t, nil, nil)
	big := url.Values{"grant_type": {"client_credentials"}, "pad": {strings.Repeat("a", 1<<20)}}.Encode()
	for _, path := range []string{"/oauth2/token", "/oauth2/introspect", "/oauth2/revoke"} {
		req, _ := http.NewRequest("POST", ts.base+path, strings.NewReader(big))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.SetBasicAuth("svc_someone", "secret")
		code, body := do(t, req)
		var e struct {
			Error string `json:"error"`
		}
		if code != http.StatusRequestEntityTooLarge || json.Unmarshal(body, &e) != nil || e.Error == "" {
			t.Errorf("POST %s with a 1 MB form = %d %q, want 413 with a JSON error", path, code, body)
		}
	}
	for _, c := range []struct {
		name, path string
		form       url.Values
		id         string
	}{
		{"client_id NUL", "/oauth2/token", url.Values{"grant_type": {"client_credentials"}, "client_id": {"svc_\x00"}, "client_secret": {"x"}}, ""},
		{"refresh token not UTF-8", "/oauth2/token", url.Values{"grant_type": {"refresh_token"}, "client_id": {"leaky-cli"}, "refresh_token": {"a.\xff"}}, ""},
		{"basic id escaped NUL", "/oauth2/token", url.Values{"grant_type": {"client_credentials"}}, "svc_%00"},
		{"introspect token NUL", "/oauth2/introspect", url.Values{"token": {"a\x00"}}, "svc_x"},
		{"revoke token not UTF-8", "/oauth2/revoke", url.Values{"token": {"\xff"}}, "svc_x"},
	} {
		req, _ := http.NewRequest("POST", ts.base+c.path, strings.NewReader(c.form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		if c.id != "" {
			req.SetBasicAuth(c.id, "secret")
		}
		code, body := do(t, req)
		var e struct {
			Error string `json:"error"`
		}
		if code != http.StatusBadRequest || json.Unmarshal(body, &e) != nil || e.Error != "invalid_request" {
			t.Errorf("%s: POST %s = %d %q, want 400 invalid_request", c.name, c.path, code, body)
		}
	}
}

func do(t testing.TB, req *http.Request) (int, []byte) {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL.Path, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, data
}
