// Command consul is HashiCorp Consul v1.14.11 (MPL-2.0), built from its
// module for the tests' agent (`consul agent -dev`). It exists so that the
// test harness needs no download of a prebuilt binary: scripts/deps.sh builds
// it once per machine into a cache outside the repository.
//
// This is a module of its own so that the project's module does not inherit
// Consul's dependency graph. It must never move to a BUSL-licensed Consul
// (v1.17.0 and later) nor depend on consul/envoyextensions or
// consul/troubleshoot.
package main

import (
	"fmt"
	"io"
	"log"
	"maps"
	"os"
	"slices"

	"github.com/hashicorp/consul/command"
	"github.com/hashicorp/consul/command/cli"
	"github.com/hashicorp/consul/command/version"
	mcli "github.com/mitchellh/cli"
)

func main() {
	os.Exit(run(os.Args[1:]))
}

// run dispatches args to Consul's registered commands and returns the exit
// code. Consul's packages log through the standard logger during start-up;
// the agent has its own logger, so that output is discarded.
func run(args []string) int {
	log.SetOutput(io.Discard)
	ui := &cli.BasicUI{BasicUi: mcli.BasicUi{Writer: os.Stdout, ErrorWriter: os.Stderr}}
	cmds := command.RegisteredCommands(ui)
	app := &mcli.CLI{
		Name:        "consul",
		Args:        args,
		Commands:    cmds,
		HelpFunc:    mcli.FilteredHelpFunc(slices.Sorted(maps.Keys(cmds)), mcli.BasicHelpFunc("consul")),
		HelpWriter:  os.Stdout,
		ErrorWriter: os.Stderr,
	}
	if app.IsVersion() {
		return version.New(ui).Run(nil)
	}
	code, err := app.Run()
	if err != nil {
		fmt.Fprintf(os.Stderr, "consul: %v\n", err)
		return 1
	}
	return code
}
