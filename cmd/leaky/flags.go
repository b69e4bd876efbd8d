package main

import (
	"flag"
	"fmt"

	"github.com/leakytokens/leaky/internal/flagenv"
)

// newFlagSet returns a flag set whose usage names the command and every
// flag's environment variable.
func newFlagSet(e env, name, synopsis string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	fs.Usage = func() {
		fmt.Fprintf(e.stderr, "usage: leaky %s\n\nflags (each also read from the environment variable in brackets):\n", synopsis)
		fs.PrintDefaults()
	}
	return fs
}

// parseFlags applies the environment, then the arguments.
func parseFlags(e env, fs *flag.FlagSet, args []string) error {
	return flagenv.Parse(fs, args, e.getenv)
}
