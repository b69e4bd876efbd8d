// Package flagenv lets every command-line flag also be set from the
// environment: flag -redis-url reads LEAKY_REDIS_URL. A flag given on the
// command line wins over the environment, which wins over the default.
package flagenv

import (
	"errors"
	"flag"
	"fmt"
	"strings"
)

// Prefix starts every environment variable name.
const Prefix = "LEAKY_"

// Name is the environment variable that sets the flag called flagName.
func Name(flagName string) string {
	return Prefix + strings.ToUpper(strings.NewReplacer("-", "_", ".", "_").Replace(flagName))
}

// Parse applies the environment to fs through getenv, then parses args. It
// reports every environment value that fails to parse, naming the variable
// (never its value, which may be a secret). The flag set's usage lists each
// flag's variable.
func Parse(fs *flag.FlagSet, args []string, getenv func(string) string) error {
	var errs []error
	fs.VisitAll(func(f *flag.Flag) {
		name := Name(f.Name)
		if !strings.Contains(f.Usage, name) {
			f.Usage += " [$" + name + "]"
		}
		v := getenv(name)
		if v == "" {
			return
		}
		if err := f.Value.Set(v); err != nil {
			errs = append(errs, fmt.Errorf("%s: invalid value for -%s", name, f.Name))
		}
	})
	if err := errors.Join(errs...); err != nil {
		return err
	}
	return fs.Parse(args)
}
