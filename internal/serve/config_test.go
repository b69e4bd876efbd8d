package serve

import (
	"flag"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/leakytokens/leaky/internal/flagenv"
)

func TestDefaultConfigIsValid(t *testing.T) {
	if err := DefaultConfig().Validate(); err != nil {
		t.Errorf("DefaultConfig().Validate() = %v, want nil", err)
	}
}

// Every field is a flag that also reads LEAKY_<FLAG>; the command line
// wins over the environment.
func TestFlagsAndEnvironment(t *testing.T) {
	c := DefaultConfig()
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	c.RegisterFlags(fs)
	env := map[string]string{
		"LEAKY_GRPC_MAX_CONCURRENT_STREAMS": "7",
		"LEAKY_MAX_CONNECTIONS":             "9",
		"LEAKY_HTTP_IDLE_TIMEOUT":           "3s",
	}
	args := []string{"-max-connections", "11", "-grpc-max-connection-idle", "1m", "-shutdown-delay", "2s"}
	if err := flagenv.Parse(fs, args, func(k string) string { return env[k] }); err != nil {
		t.Fatal(err)
	}
	want := DefaultConfig()
	want.GRPCMaxConcurrentStreams = 7
	want.MaxConnections = 11
	want.HTTPIdleTimeout = 3 * time.Second
	want.GRPCMaxConnectionIdle = time.Minute
	want.ShutdownDelay = 2 * time.Second
	if diff := cmp.Diff(want, c); diff != "" {
		t.Errorf("config after environment and flags (-want +got):\n%s", diff)
	}
	n := 0
	fs.VisitAll(func(*flag.Flag) { n++ })
	if fields := reflect.TypeFor[Config]().NumField(); n != fields {
		t.Errorf("flags registered = %d, want one per field (%d)", n, fields)
	}
}

func TestValidateReportsEveryProblem(t *testing.T) {
	c := DefaultConfig()
	c.GRPCMaxConcurrentStreams = 0
	c.MaxConnections = 0
	c.HTTPIdleTimeout = 0
	c.ShutdownGrace = -time.Second
	err := c.Validate()
	if err == nil {
		t.Fatal("Validate() = nil, want errors")
	}
	for _, flag := range []string{"grpc-max-concurrent-streams", "max-connections", "http-idle-timeout", "shutdown-grace"} {
		if !strings.Contains(err.Error(), flag) {
			t.Errorf("Validate() = %q, want it to name %s", err, flag)
		}
	}
}
