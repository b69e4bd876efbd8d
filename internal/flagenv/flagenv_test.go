package flagenv

import (
	"bytes"
	"flag"
	"strings"
	"testing"
	"time"
)

func TestName(t *testing.T) {
	for in, want := range map[string]string{"redis-url": "LEAKY_REDIS_URL", "grpc-addr": "LEAKY_GRPC_ADDR", "a.b": "LEAKY_A_B"} {
		if got := Name(in); got != want {
			t.Errorf("Name(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestParsePrecedence(t *testing.T) {
	env := map[string]string{"LEAKY_ADDR": "from-env", "LEAKY_TIMEOUT": "2s"}
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	addr := fs.String("addr", "default", "address")
	timeout := fs.Duration("timeout", time.Second, "timeout")
	other := fs.String("other", "default", "other")
	if err := Parse(fs, []string{"-addr", "from-flag"}, func(k string) string { return env[k] }); err != nil {
		t.Fatal(err)
	}
	if *addr != "from-flag" || *timeout != 2*time.Second || *other != "default" {
		t.Errorf("addr %q timeout %v other %q, want from-flag 2s default", *addr, *timeout, *other)
	}
	var usage bytes.Buffer
	fs.SetOutput(&usage)
	fs.PrintDefaults()
	if !strings.Contains(usage.String(), "[$LEAKY_OTHER]") {
		t.Errorf("usage does not name the variable:\n%s", usage.String())
	}
}

func TestParseBadEnvNamesVariableNotValue(t *testing.T) {
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	fs.Duration("timeout", time.Second, "")
	err := Parse(fs, nil, func(k string) string {
		if k == "LEAKY_TIMEOUT" {
			return "secret-value"
		}
		return ""
	})
	if err == nil || !strings.Contains(err.Error(), "LEAKY_TIMEOUT") || strings.Contains(err.Error(), "secret-value") {
		t.Errorf("Parse = %v, want an error naming LEAKY_TIMEOUT without its value", err)
	}
}
