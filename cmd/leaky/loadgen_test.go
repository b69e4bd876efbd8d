package main

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
)

// -login-load needs the REST API of -authz-http (its throwaway user is
// the one the logins name) and is refused before anything is dialled.
func TestLoadgenLoginLoadFlags(t *testing.T) {
	for _, tt := range []struct {
		name string
		args []string
		want string
	}{
		{"without authz-http", []string{"-target", "authz", "-token", "t", "-login-load", "4"}, "login-load: only with -target authz and -authz-http"},
		{"ratelimit target", []string{"-target", "ratelimit", "-login-load", "4"}, "login-load: only with -target authz and -authz-http"},
		{"negative", []string{"-target", "authz", "-token", "t", "-login-load", "-1"}, "login-load: must not be negative"},
		{"empty password", []string{"-target", "authz", "-authz-http", "http://127.0.0.1:1", "-login-load", "4", "-login-password-bytes", "0"}, "login-password-bytes: must be positive"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			err := run(context.Background(), append([]string{"loadgen", "-addr", "127.0.0.1:1"}, tt.args...), testEnv(&out, &out, nil))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("loadgen %v = %v, want an error naming %q", tt.args, err, tt.want)
			}
		})
	}
}

// -target http sends the same request -count times over HTTP and reports
// the answers by status; its flags are checked before anything is sent.
func TestLoadgenHTTPTarget(t *testing.T) {
	var got atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		if r.Header.Get("x-api-key") != "k" || string(b) != `{"model":"m"}` {
			http.Error(w, "unexpected", http.StatusBadRequest)
			return
		}
		got.Add(1)
	}))
	defer srv.Close()
	var out bytes.Buffer
	args := []string{"loadgen", "-target", "http", "-url", srv.URL + "/v1/chat/completions", "-header", "x-api-key: k",
		"-body", `{"model":"m"}`, "-count", "20", "-duration", "0", "-warmup", "0", "-concurrency", "4", "-json"}
	if err := run(context.Background(), args, testEnv(&out, &out, nil)); err != nil {
		t.Fatalf("loadgen: %v\n%s", err, out.String())
	}
	if got.Load() != 20 || !strings.Contains(out.String(), `"200":20`) {
		t.Errorf("server saw %d requests; report:\n%s", got.Load(), out.String())
	}
	for _, bad := range [][]string{
		{"-target", "http"},
		{"-target", "http", "-url", "ftp://x/"},
		{"-target", "http", "-url", srv.URL, "-header", "no-colon"},
		{"-target", "ratelimit", "-authz-http", srv.URL},
	} {
		if err := run(context.Background(), append([]string{"loadgen"}, bad...), testEnv(&out, &out, nil)); err == nil {
			t.Errorf("loadgen %v: want an error", bad)
		}
	}
}
