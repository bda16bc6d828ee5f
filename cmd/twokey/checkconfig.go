package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"strings"

	"github.com/twokey/twokey/config"
)

// checkConfig is `twokey check-config`: it reads the config, then checks the
// environment and key files of the processes that will run with it the way
// each checks them at start (config.LoadSecrets with the process's Needs,
// loadKeys with its role, and sandbox where terraform runs), and prints every
// problem at once, one a line. It says ok only when there is none, and never
// prints a secret's value.
func checkConfig(ctx context.Context, args []string, stdout io.Writer, getenv func(string) string) error {
	fs := flag.NewFlagSet("check-config", flag.ContinueOnError)
	path := fs.String("config", "twokey.yaml", "path to the config file")
	forWhom := fs.String("for", "all", "whose environment to check: serve; runner; or all: serve, and when runner pools run plans "+
		"(runner.embedded: false) the runner of every pool")
	pool := fs.String("pool", "", "with --for runner or all: only the runner of this pool")
	if err := fs.Parse(args); err != nil {
		return err
	}
	switch {
	case fs.NArg() > 0:
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	case *forWhom != "all" && *forWhom != "serve" && *forWhom != "runner":
		return fmt.Errorf("--for must be all, serve or runner, not %q", *forWhom)
	case *pool != "" && *forWhom == "serve":
		return fmt.Errorf("--pool goes with --for runner or all")
	}
	abs, err := filepath.Abs(*path)
	if err != nil {
		abs = *path
	}

	var p problems
	cfg, err := config.CheckFile(*path)
	p.add("", err)
	if cfg == nil {
		return p.err(abs, " (the environment was not checked: the config could not be read)")
	}
	discard := slog.New(slog.DiscardHandler)
	runsPlans := false
	for _, pr := range processes(cfg, *forWhom, *pool, &p) {
		_, err := cfg.LoadSecrets(getenv, pr.needs)
		p.add(pr.name, err)
		if _, err := loadKeys(cfg, discard, pr.role); err != nil {
			p.add(pr.name+"\x00signing keys", err)
		}
		runsPlans = runsPlans || pr.needs.Vault
	}
	// Where terraform runs, say how it is confined; on this host, check
	// that it can be.
	var sb fmt.Stringer
	if runsPlans {
		s, err := sandbox(ctx, cfg.Runner.Sandbox, discard)
		p.add("", err)
		if err == nil {
			sb = s
		}
	}
	if err := p.err(abs, ""); err != nil {
		return err
	}
	n := 0
	for _, pr := range cfg.Projects {
		n += len(pr.Environments)
	}
	fmt.Fprintf(stdout, "%s: ok (%d projects, %d environments)\n", abs, len(cfg.Projects), n)
	if sb != nil {
		fmt.Fprintf(stdout, "sandbox: %s\n", sb)
		if cfg.Runner.Sandbox.Mode == config.SandboxNone {
			fmt.Fprintln(stdout, "WARNING: runner.sandbox.mode is none: a pull request's code runs at plan time as twokey's own user, "+
				"with access to its files and processes; every plan message says so")
		}
	}
	return nil
}

// process is one twokey process the config is for, as check-config checks it.
type process struct {
	name  string // as problems name it: serve, runner --pool prod
	role  string // loadKeys's
	needs config.Needs
}

// processes are those forWhom names: serve, the runner of pool (or of every
// pool), or all: serve, and the runner of every pool when runner pools run
// the plans.
func processes(cfg *config.Config, forWhom, pool string, p *problems) []process {
	var ps []process
	if forWhom != "runner" {
		ps = append(ps, process{"serve", "serve", cfg.ForServe()})
	}
	if forWhom == "serve" || forWhom == "all" && cfg.Runner.IsEmbedded() && pool == "" {
		return ps
	}
	pools := runnerPools(cfg)
	if pool != "" {
		if _, ok := cfg.PoolFor(pool); !ok {
			p.add("", fmt.Errorf("--pool: no pool %q in the config", pool))
			return ps
		}
		pools = []string{pool}
	}
	for _, name := range pools {
		ps = append(ps, process{"runner --pool " + name, "runner", cfg.ForRunner(name)})
	}
	return ps
}

// runnerPools are the pools runners are started for: every pool an
// environment names, and every pool the config defines.
func runnerPools(cfg *config.Config) []string {
	var names []string
	seen := map[string]bool{}
	add := func(name string) {
		if _, ok := cfg.PoolFor(name); ok && !seen[name] { // an undefined one is a problem Validate reports
			seen[name] = true
			names = append(names, name)
		}
	}
	for _, pr := range cfg.Projects {
		for _, e := range pr.Environments {
			add(e.Pool)
		}
	}
	for _, pl := range cfg.Pools {
		add(pl.Name)
	}
	return names
}

// problems are everything check-config found, in the order found, each
// once: a problem several processes share names them all.
type problems struct {
	lines []string
	whose map[string][]string // line → the processes it is a problem for
}

// add records each line of err as a problem of who ("" for the config
// itself; "name\x00topic" for a process's problem about topic).
func (p *problems) add(who string, err error) {
	if err == nil {
		return
	}
	if p.whose == nil {
		p.whose = map[string][]string{}
	}
	who, topic, _ := strings.Cut(who, "\x00")
	for _, line := range strings.Split(err.Error(), "\n") {
		if strings.TrimSpace(line) == "" {
			continue
		}
		if topic != "" {
			line = topic + ": " + line
		}
		if _, ok := p.whose[line]; !ok {
			p.lines = append(p.lines, line)
		}
		if who != "" {
			p.whose[line] = append(p.whose[line], who)
		} else if p.whose[line] == nil {
			p.whose[line] = []string{}
		}
	}
}

// err is every problem, one a line, under a heading that names the file;
// nil if there is none.
func (p *problems) err(path, note string) error {
	if len(p.lines) == 0 {
		return nil
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s: %d problem", path, len(p.lines))
	if len(p.lines) > 1 {
		b.WriteString("s")
	}
	b.WriteString(note)
	for _, line := range p.lines {
		b.WriteString("\n")
		if who := p.whose[line]; len(who) > 0 {
			b.WriteString(strings.Join(who, ", ") + ": ")
		}
		b.WriteString(line)
	}
	return fmt.Errorf("%s", b.String())
}
