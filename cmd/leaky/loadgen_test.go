package main

import (
	"bytes"
	"context"
	"strings"
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
