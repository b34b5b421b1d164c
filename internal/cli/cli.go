// Package cli is the small layer every clickrec subcommand shares: flags with
// environment fallbacks (a flag set on the command line wins over its variable),
// usage text that names both, structured logging, and the exit-code contract:
// 0 success (and --help), 1 runtime failure, 2 usage or configuration error.
package cli

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"
)

// UsageError is a configuration mistake the user can fix: a wrong flag, a bad
// value, an unreachable server. The command exits with code 2 and prints it on
// one line.
type UsageError struct{ Msg string }

func (e *UsageError) Error() string { return e.Msg }

// Usagef returns a *UsageError.
func Usagef(format string, args ...any) error { return &UsageError{Msg: fmt.Sprintf(format, args...)} }

// ExitCode maps an error returned by a command to the process exit code.
func ExitCode(err error) int {
	var ue *UsageError
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return 0
	case errors.As(err, &ue):
		return 2
	default:
		return 1
	}
}

// FlagSet is a flag.FlagSet whose flags may each fall back to an environment variable.
type FlagSet struct {
	*flag.FlagSet
	env      map[string]string // flag name → variable
	synopsis string
}

// NewFlagSet returns a FlagSet for subcommand name ("clickrec <name>").
func NewFlagSet(name, synopsis string) *FlagSet {
	fs := &FlagSet{FlagSet: flag.NewFlagSet(name, flag.ContinueOnError), env: map[string]string{}, synopsis: synopsis}
	fs.FlagSet.SetOutput(io.Discard)
	fs.FlagSet.Usage = func() {}
	return fs
}

// Env binds flag name to environment variable env; the description gains "(env: VAR)".
func (fs *FlagSet) Env(name, env string) {
	f := fs.Lookup(name)
	if f == nil {
		panic("cli: Env on unknown flag " + name)
	}
	fs.env[name] = env
	f.Usage += " (env " + env + ")"
}

// Parse parses args, then fills every flag not given on the command line from its
// environment variable. Errors are *UsageError and name the flag or variable.
func (fs *FlagSet) Parse(args []string) error {
	if err := fs.FlagSet.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fs.PrintUsage(os.Stdout)
			return flag.ErrHelp
		}
		return Usagef("clickrec %s: %v (see clickrec %s --help)", fs.Name(), err, fs.Name())
	}
	if fs.NArg() > 0 {
		return Usagef("clickrec %s: unexpected argument %q (see clickrec %s --help)", fs.Name(), fs.Arg(0), fs.Name())
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	for name, env := range fs.env {
		v, ok := os.LookupEnv(env)
		if !ok || set[name] {
			continue
		}
		if err := fs.Set(name, v); err != nil {
			return Usagef("clickrec %s: environment %s=%q: %v", fs.Name(), env, v, err)
		}
	}
	return nil
}

// PrintUsage writes the synopsis and every flag with its default and variable.
func (fs *FlagSet) PrintUsage(w io.Writer) {
	fmt.Fprintf(w, "Usage: clickrec %s [flags]\n\n%s\n\nFlags:\n", fs.Name(), strings.TrimSpace(fs.synopsis))
	fs.VisitAll(func(f *flag.Flag) {
		name, usage := flag.UnquoteUsage(f)
		line := "  --" + f.Name
		if name != "" {
			line += " " + name
		}
		fmt.Fprintf(w, "%s\n    \t%s", line, strings.ReplaceAll(usage, "\n", "\n    \t"))
		if f.DefValue != "" && f.DefValue != "0" && f.DefValue != "false" && f.DefValue != "[]" {
			fmt.Fprintf(w, " (default %s)", f.DefValue)
		}
		fmt.Fprintln(w)
	})
}

// Strings is a comma-separated list flag.
type Strings []string

func (s *Strings) String() string { return strings.Join(*s, ",") }

// Set implements flag.Value.
func (s *Strings) Set(v string) error {
	*s = nil
	for _, p := range strings.Split(v, ",") {
		if p = strings.TrimSpace(p); p != "" {
			*s = append(*s, p)
		}
	}
	return nil
}

// Logging holds the shared log flags.
type Logging struct {
	Level  string
	Format string
}

// Register adds --log-level and --log-format.
func (l *Logging) Register(fs *FlagSet) {
	fs.StringVar(&l.Level, "log-level", "info", "log level: debug, info, warn, error")
	fs.Env("log-level", "CLICKREC_LOG_LEVEL")
	fs.StringVar(&l.Format, "log-format", "text", "log format: text or json")
	fs.Env("log-format", "CLICKREC_LOG_FORMAT")
}

// Logger builds the slog logger (to stderr) the flags describe.
func (l *Logging) Logger() (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(l.Level)); err != nil {
		return nil, Usagef("--log-level %q: want debug, info, warn or error", l.Level)
	}
	opts := &slog.HandlerOptions{Level: lvl}
	switch l.Format {
	case "text":
		return slog.New(slog.NewTextHandler(os.Stderr, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(os.Stderr, opts)), nil
	}
	return nil, Usagef("--log-format %q: want text or json", l.Format)
}

// Positive returns a *UsageError unless v > 0.
func Positive[T int | int64 | float64 | time.Duration](flagName string, v T) error {
	if v <= 0 {
		return Usagef("--%s must be positive, got %v", flagName, v)
	}
	return nil
}
