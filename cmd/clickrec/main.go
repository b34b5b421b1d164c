// Command clickrec is the single binary of the clickrec platform: the stream
// worker, the workflow worker, the generator, the trainer, the load test and the
// operator tools are its subcommands. Run `clickrec --help` for the list.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"syscall"

	"github.com/clickrec/clickrec/internal/cli"
)

// command is one subcommand. Each lives in its own file and registers itself in init.
type command struct {
	name     string
	synopsis string // one line, shown in `clickrec --help`
	run      func(ctx context.Context, args []string) error
}

var commands = map[string]command{}

func register(c command) {
	if _, dup := commands[c.name]; dup {
		panic("duplicate command " + c.name)
	}
	commands[c.name] = c
}

func usage(w io.Writer) {
	fmt.Fprintln(w, `clickrec — real-time e-commerce recommendations on Kafka, ONNX Runtime, Redis and Temporal.

Usage: clickrec <command> [flags]

Commands:`)
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-10s %s\n", n, commands[n].synopsis)
	}
	fmt.Fprintln(w, "\nRun `clickrec <command> --help` for a command's flags; every flag also reads a CLICKREC_* environment variable.")
}

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(os.Stdout)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	cmd, ok := commands[args[0]]
	if !ok {
		fmt.Fprintf(os.Stderr, "clickrec: unknown command %q (run clickrec --help for the list)\n", args[0])
		return 2
	}
	// SIGINT/SIGTERM cancel ctx: every command shuts down gracefully from there.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := cmd.run(ctx, args[1:])
	if err != nil && !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintf(os.Stderr, "clickrec %s: %v\n", cmd.name, err)
	}
	return cli.ExitCode(err)
}
