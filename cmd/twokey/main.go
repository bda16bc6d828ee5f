// Command twokey is a Slack ChatOps front end for Terraform under the
// two-person rule. See the README.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"os/signal"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	os.Exit(Main(ctx, os.Args[1:], os.Stdout, os.Stderr, os.Getenv))
}

// Main runs one twokey command and returns its exit code. It ends when ctx
// does; tests start and stop it in process.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	switch args[0] {
	case "serve", "runner", "demo":
		// These hold tokens in memory and in their environment; terraform,
		// and anything else of the same uid, must not read them through
		// /proc/<pid>/environ or mem, or ptrace.
		if err := nondumpable(); err != nil {
			fmt.Fprintf(stderr, "twokey: cannot make this process non-dumpable: %v\n", err)
			return 1
		}
		// Descriptors inherited from whatever started twokey would pass
		// on to every child, sandboxed runs included.
		if err := unix.CloseRange(3, math.MaxUint32, unix.CLOSE_RANGE_CLOEXEC); err != nil {
			fmt.Fprintf(stderr, "twokey: cannot keep inherited descriptors from children: %v\n", err)
			return 1
		}
	}
	var err error
	switch args[0] {
	case "serve":
		err = serve(ctx, args[1:], stderr, getenv)
	case "runner":
		err = runnerCmd(ctx, args[1:], stderr, getenv)
	case "check-config":
		err = checkConfig(ctx, args[1:], stdout, getenv)
	case "demo":
		err = demo(ctx, args[1:], stdout, stderr)
	case "audit":
		err = auditCmd(ctx, args[1:], stdout, getenv)
	case "keygen":
		err = keygen(args[1:], stdout)
	case "version":
		fmt.Fprintln(stdout, "twokey", version)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
	default:
		fmt.Fprintf(stderr, "twokey: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
	if errors.Is(err, flag.ErrHelp) {
		return 2
	}
	if err != nil {
		fmt.Fprintf(stderr, "twokey %s: %v\n", args[0], err)
		return 1
	}
	return 0
}

const usage = `usage: twokey <command> [flags]

commands:
  demo           the whole flow on this machine, in a local Slack-like page
  serve          connect to Slack and run plans and applies (or dispatch them to runner pools)
  runner         run the plans and applies of one pool (--pool), with that pool's Vault login
  audit          verify the audit chain (audit verify), or write it out (audit export --since 720h)
  check-config   validate a config file and the environment it needs; print every problem
  keygen         make an ed25519 signing key: twokey keygen <path> writes <path>.key and <path>.pub
  version        print the version
`

// commonFlags are the flags every long-running command takes.
type commonFlags struct {
	config        string
	logFormat     string
	logLevel      string
	metricsListen string
}

func (c *commonFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&c.config, "config", "twokey.yaml", "path to the config file")
	fs.StringVar(&c.logFormat, "log-format", "json", "log format: json or text")
	fs.StringVar(&c.logLevel, "log-level", "info", "log level: debug, info, warn, error")
	fs.StringVar(&c.metricsListen, "metrics-listen", "", "address of /metrics, /healthz and /readyz, e.g. :9090; empty: none")
}

func (c *commonFlags) logger(w io.Writer) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(c.logLevel)); err != nil {
		return nil, fmt.Errorf("--log-level: %w", err)
	}
	opts := &slog.HandlerOptions{Level: level}
	switch c.logFormat {
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("--log-format must be json or text, not %q", c.logFormat)
}

// nondumpable makes this process's /proc/<pid>/environ, mem and maps
// unreadable to, and the process untraceable by, other processes of the
// same uid without CAP_SYS_PTRACE. The kernel resets it on execve, so every
// twokey process sets it for itself.
func nondumpable() error { return unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0) }

// positive refuses a duration flag that is not above zero (where zero
// would quietly mean a default, not "at once").
func positive(flag string, d time.Duration) error {
	if d <= 0 {
		return fmt.Errorf("--%s must be above zero (got %s); a small value like 1s interrupts running work almost at once", flag, d)
	}
	return nil
}
