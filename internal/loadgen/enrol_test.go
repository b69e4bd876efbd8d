package loadgen

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
)

const (
	fakeToken  = "eyJ.fake-jwt.sig"
	fakeAPIKey = "lt_fake_secretkey"
)

// fakeAuthzREST is the authz REST API's register and api-keys endpoints:
// register checks the input as the service does and answers a fixed user
// and token; api-keys wants that token and user. Setting registerStatus or
// keyStatus makes the endpoint fail with it; rawRegister replaces the
// register answer.
type fakeAuthzREST struct {
	registerStatus, keyStatus int
	rawRegister               string

	mu        sync.Mutex
	usernames []string
	keyNames  []string
}

func (f *fakeAuthzREST) handler(t *testing.T) http.Handler {
	usernamePattern := regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{2,49}$`)
	emailPattern := regexp.MustCompile(`^[^@\s]{1,64}@[^@\s]+\.[^@\s]+$`)
	mux := http.NewServeMux()
	problem := func(w http.ResponseWriter, status int, code, msg string) {
		w.Header().Set("content-type", "application/json")
		w.WriteHeader(status)
		_ = json.NewEncoder(w).Encode(map[string]string{"error": code, "message": msg})
	}
	created := func(w http.ResponseWriter, v any) {
		w.Header().Set("content-type", "application/json")
		w.WriteHeader(http.StatusCreated)
		_ = json.NewEncoder(w).Encode(v)
	}
	mux.HandleFunc("POST /api/v1/auth/register", func(w http.ResponseWriter, r *http.Request) {
		var in struct{ Username, Email, Password string }
		if err := json.NewDecoder(r.Body).Decode(&in); err != nil || r.Header.Get("content-type") != "application/json" {
			problem(w, http.StatusBadRequest, "bad_request", "want a JSON body")
			return
		}
		if !usernamePattern.MatchString(in.Username) || !emailPattern.MatchString(in.Email) || len(in.Password) < 8 {
			t.Errorf("register got username %q, email %q, a %d-character password: the service refuses it", in.Username, in.Email, len(in.Password))
			problem(w, http.StatusBadRequest, "bad_request", "invalid input")
			return
		}
		f.mu.Lock()
		f.usernames = append(f.usernames, in.Username)
		f.mu.Unlock()
		switch {
		case f.registerStatus != 0:
			problem(w, f.registerStatus, "conflict", "username or email already registered")
		case f.rawRegister != "":
			w.WriteHeader(http.StatusCreated)
			_, _ = w.Write([]byte(f.rawRegister))
		default:
			created(w, map[string]any{"userId": "u-1", "username": in.Username, "token": fakeToken, "tokenType": "Bearer", "expiresIn": 900})
		}
	})
	mux.HandleFunc("POST /api/v1/auth/api-keys", func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("authorization") != "Bearer "+fakeToken {
			problem(w, http.StatusUnauthorized, "unauthorized", "missing or invalid credentials")
			return
		}
		var in struct{ UserID, Name string }
		if err := json.NewDecoder(r.Body).Decode(&in); err != nil || in.UserID != "u-1" {
			problem(w, http.StatusForbidden, "forbidden", "not your user")
			return
		}
		f.mu.Lock()
		f.keyNames = append(f.keyNames, in.Name)
		f.mu.Unlock()
		if f.keyStatus != 0 {
			problem(w, f.keyStatus, "internal", "store failed")
			return
		}
		created(w, map[string]any{"id": "k-1", "userId": "u-1", "name": in.Name, "apiKey": fakeAPIKey})
	})
	return mux
}

func TestEnrol(t *testing.T) {
	f := &fakeAuthzREST{}
	srv := httptest.NewServer(f.handler(t))
	defer srv.Close()

	got, err := Enrol(t.Context(), srv.Client(), srv.URL+"/")
	if err != nil {
		t.Fatalf("Enrol() error = %v", err)
	}
	if !regexp.MustCompile(`^loadgen-[0-9a-f]{12}$`).MatchString(got.Username) {
		t.Errorf("Enrol().Username = %q, want loadgen-<12 hex digits>", got.Username)
	}
	want := Enrolment{Username: got.Username, UserID: "u-1", Token: fakeToken, APIKey: fakeAPIKey}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Enrol() mismatch (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"loadgen"}, f.keyNames); diff != "" {
		t.Errorf("API key names mismatch (-want +got):\n%s", diff)
	}

	again, err := Enrol(t.Context(), srv.Client(), srv.URL)
	if err != nil {
		t.Fatalf("second Enrol() error = %v", err)
	}
	if again.Username == got.Username {
		t.Errorf("two Enrol() calls registered the same username %q, want a fresh one each", got.Username)
	}
}

func TestEnrolErrors(t *testing.T) {
	tests := []struct {
		name string
		fake *fakeAuthzREST
		want []string // substrings of the error
	}{
		{"register refused", &fakeAuthzREST{registerStatus: http.StatusConflict},
			[]string{"enrol: POST ", "/api/v1/auth/register: 409 Conflict", `error "conflict"`, `message "username or email already registered"`}},
		{"api key refused", &fakeAuthzREST{keyStatus: http.StatusInternalServerError},
			[]string{"/api/v1/auth/api-keys: 500 Internal Server Error", `error "internal"`}},
		{"register without token", &fakeAuthzREST{rawRegister: `{"userId":"u-1"}`},
			[]string{"enrol: register answered without userId or token"}},
		{"register not JSON", &fakeAuthzREST{rawRegister: `<html>`},
			[]string{"/api/v1/auth/register: answer: invalid character"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := httptest.NewServer(tt.fake.handler(t))
			defer srv.Close()
			got, err := Enrol(t.Context(), srv.Client(), srv.URL)
			if err == nil {
				t.Fatalf("Enrol() = %+v, nil, want an error", got)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Enrol() error = %q, want it to contain %q", err, w)
				}
			}
			for _, secret := range []string{fakeToken, fakeAPIKey} {
				if strings.Contains(err.Error(), secret) {
					t.Errorf("Enrol() error = %q, holds a credential", err)
				}
			}
		})
	}

	t.Run("no server", func(t *testing.T) {
		srv := httptest.NewServer(http.NotFoundHandler())
		srv.Close()
		if _, err := Enrol(t.Context(), nil, srv.URL); err == nil || !strings.Contains(err.Error(), "enrol: ") {
			t.Errorf("Enrol(closed port) error = %v, want an enrol: error", err)
		}
	})
}

func TestEnrolmentUse(t *testing.T) {
	e := Enrolment{Token: "tok", APIKey: "key"}
	old := DefaultAuthzOptions()
	old.Token, old.APIKey = "stale-token", "stale-key"
	tests := []struct {
		name             string
		in               Credential
		wantTok, wantKey string
		wantErr          bool
	}{
		{"jwt", JWT, "tok", "", false},
		{"api key", APIKey, "", "key", false},
		{"unknown", "basic", "", "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := e.Use(old, tt.in)
			if (err != nil) != tt.wantErr {
				t.Fatalf("Use(%q) error = %v, want error %v", tt.in, err, tt.wantErr)
			}
			if got.Token != tt.wantTok || got.APIKey != tt.wantKey {
				t.Errorf("Use(%q) = token %q, api key %q, want %q, %q", tt.in, got.Token, got.APIKey, tt.wantTok, tt.wantKey)
			}
			if got.Path != old.Path || got.Body != old.Body {
				t.Errorf("Use(%q) changed the request: path %q body %q", tt.in, got.Path, got.Body)
			}
		})
	}
}
