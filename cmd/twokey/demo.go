//go:build demo

// The demo is built only with -tags demo (scripts/demo.sh does that): it
// links the simulators, devstack and miniredis, which the production
// binary must not carry. nodemo.go stands in for it otherwise.

package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/twokey/twokey/devstack"
)

// demo runs the whole flow on this machine: a local Slack with a web page,
// GitHub, Vault and Redis stand-ins, and `twokey serve` itself, unmodified.
// Ctrl-C stops everything and removes what it wrote.
func demo(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	listen := fs.String("listen", "127.0.0.1:7777", "address of the demo page (and its local Slack)")
	redisURL := fs.String("redis-url", "", "use this Redis instead of the embedded one")
	keep := fs.Bool("keep", false, "keep the demo's files after it stops")
	logLevel := fs.String("log-level", "warn", "twokey's log level: debug, info, warn, error")
	if err := fs.Parse(args); err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "twokey-demo-")
	if err != nil {
		return err
	}
	if *keep {
		defer fmt.Fprintf(stdout, "demo files kept in %s\n", dir)
	} else {
		defer os.RemoveAll(dir)
	}
	fmt.Fprintln(stdout, "starting the twokey demo: Slack, GitHub, Vault and Redis stand-ins on 127.0.0.1 …")
	d, err := devstack.StartDemo(ctx, devstack.DemoOptions{Dir: dir, Listen: *listen, RedisURL: *redisURL})
	if err != nil {
		return err
	}
	defer d.Close()

	logPath := filepath.Join(dir, "twokey.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return err
	}
	defer logFile.Close()
	fmt.Fprintf(stdout, `
  twokey demo is running:  %s

  Pick who you are on the left, then in #deploys:
    as alice   /tf plan staging pr-1     (pr-2 destroys something)
    as alice   click Approve             refused: nobody approves their own plan
    as dave    click Approve             refused: not an approver
    as bob, then carol, click Approve    two approvals: the apply runs
    as anyone  /tf history staging       the record of what changed, by whom
    as erin    /tf breakglass            on call: emergency access, approved in #security
  twokey's log: %s    Ctrl-C stops everything.
  The audit chain, from another terminal:
    %s audit verify --config %s

`, d.URL, logPath, self(), d.Config)
	return serve(ctx, []string{"--config", d.Config, "--log-format", "text", "--log-level", *logLevel, "--shutdown-grace", "10s"},
		io.MultiWriter(logFile, levelFilter{stderr}), d.Getenv)
}

// self is how to run this binary again.
func self() string {
	if exe, err := os.Executable(); err == nil {
		return exe
	}
	return "twokey"
}

// levelFilter passes only warnings and errors to the terminal; the log
// file gets everything.
type levelFilter struct{ w io.Writer }

func (f levelFilter) Write(p []byte) (int, error) {
	if s := string(p); strings.Contains(s, "level=WARN") || strings.Contains(s, "level=ERROR") {
		if _, err := f.w.Write(p); err != nil {
			return 0, err
		}
	}
	return len(p), nil
}
