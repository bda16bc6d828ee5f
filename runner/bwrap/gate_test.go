package bwrap_test

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/twokey/twokey/devstack/stacktest"
	"github.com/twokey/twokey/runner"
	"github.com/twokey/twokey/runner/bwrap"
)

// gatedTerraform plays terraform behind a gate: it notes that it ran, where
// it runs, which descriptors it holds and whether it sees the box's control
// directory (where the gate is); given "wait", it waits for SIGINT.
const gatedTerraform = `#!/bin/sh
echo "ran $*" >> "$LOOT/ran"
echo "pwd $PWD $(pwd -P)"
for fd in /proc/self/fd/*; do echo "fd $(readlink $fd)"; done
ls "$CTL" >/dev/null 2>&1 && echo "sees the control directory"
trap 'echo interrupted; exit 3' INT
[ "$1" = wait ] && { echo ready; while :; do sleep 0.05; done; }
exit 0
`

type gated struct {
	e         env
	box       runner.Box
	gate      runner.Gate
	run, work string
	cmd       *exec.Cmd
	out       stacktest.Buffer
}

// startGated opens a box, and starts args through a gate of it that is to
// run in a directory that is not there yet, as terraform-exec starts a
// command: a process group of its own, in the run's directory.
func startGated(t *testing.T, args ...string) *gated {
	t.Helper()
	g := startGatedLater(t, args...)
	g.start(t)
	return g
}

// startGatedLater is startGated, but leaves the command to start.
func startGatedLater(t *testing.T, args ...string) *gated {
	t.Helper()
	e := newEnv(t)
	sb := stacktest.Sandbox(t, e.loot)
	script := filepath.Join(e.root, "terraform.sh")
	if err := os.WriteFile(script, []byte(gatedTerraform), 0o755); err != nil {
		t.Fatal(err)
	}
	g := &gated{e: e, run: filepath.Join(e.data, "runs", "g1")}
	g.work = filepath.Join(g.run, "src", "infra")
	box, err := sb.Open(runner.Run{Dir: g.run, Binary: script, Version: []byte(`{"terraform_version":"1.12.2"}`)})
	if err != nil {
		t.Fatal(err)
	}
	g.box = box
	t.Cleanup(func() { box.Close() })
	if g.gate, err = box.(runner.Gater).Gate(g.work); err != nil {
		t.Fatal(err)
	}
	g.cmd = exec.Command(g.gate.Exec(), args...)
	g.cmd.Dir = g.run
	g.cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "LOOT=" + e.loot, "CTL=" + g.run + ".ctl"}
	g.cmd.Stdout, g.cmd.Stderr = &g.out, &g.out
	g.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	return g
}

// start starts the gated command.
func (g *gated) start(t *testing.T) {
	t.Helper()
	if err := g.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = syscall.Kill(-g.cmd.Process.Pid, syscall.SIGKILL) })
}

// sandboxes is how many processes there are of the gate's sandbox: bwrap,
// and the namespace's first process, which waits at the gate.
func (g *gated) sandboxes() int {
	n := 0
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		if b, err := os.ReadFile(p); err == nil && strings.Contains(string(b), g.work) {
			n++
		}
	}
	return n
}

// waiting waits until the sandbox is set up and waits at the gate, and
// then makes the command's directory.
func (g *gated) waiting(t *testing.T) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); g.sandboxes() < 2; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the gate's sandbox was not set up: %s", g.out.String())
		}
	}
	// It stays there.
	time.Sleep(200 * time.Millisecond)
	if g.ran() != "" || g.sandboxes() < 2 {
		t.Fatalf("the command did not wait for its gate: ran %q, output %q", g.ran(), g.out.String())
	}
	// The directory is there now, as after a checkout.
	if err := os.MkdirAll(g.work, 0o755); err != nil {
		t.Fatal(err)
	}
}

// killBwrap kills the gate's bwrap alone, as the OOM killer or an operator
// could, and waits until the sandbox's first process, which waits at the
// gate, is all that is left of it.
func (g *gated) killBwrap(t *testing.T) {
	t.Helper()
	_ = g.cmd.Process.Kill()
	for deadline := time.Now().Add(10 * time.Second); g.sandboxes() != 1; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d processes of the sandbox after its bwrap was killed; want the one that waits", g.sandboxes())
		}
	}
}

func (g *gated) ran() string {
	b, _ := os.ReadFile(filepath.Join(g.e.loot, "ran"))
	return string(b)
}

// ends waits for the command's call to return, and for every process of
// its sandbox to be gone.
func (g *gated) ends(t *testing.T) error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- g.cmd.Wait() }()
	var err error
	select {
	case err = <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the gated command did not end")
	}
	for deadline := time.Now().Add(10 * time.Second); g.sandboxes() > 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("a process of the gate's sandbox is still there")
		}
	}
	return err
}

// A gated command's sandbox is set up before its directory is there, and
// nothing of it runs until the gate opens; it then runs in its directory,
// holding no descriptor of the gate, and no more able to see the box's
// control directory than any other command.
func TestGateHoldsItsCommand(t *testing.T) {
	g := startGated(t, "plan", "-out=x")
	g.waiting(t)
	if err := g.gate.Open(); err != nil {
		t.Fatal(err)
	}
	if err := g.ends(t); err != nil {
		t.Fatalf("%v: %s", err, g.out.String())
	}
	out := g.out.String()
	if g.ran() != "ran plan -out=x\n" {
		t.Errorf("the command ran as %q", g.ran())
	}
	if !strings.Contains(out, "pwd "+g.work+" "+g.work+"\n") {
		t.Errorf("the command did not run in %s: %q", g.work, out)
	}
	if strings.Contains(out, ".ctl") {
		t.Errorf("the command holds a descriptor of the box's control directory: %q", out)
	}
	if strings.Contains(out, "sees the control directory") {
		t.Errorf("the command sees the box's control directory")
	}
}

// A gate aborted before it opens ends its sandbox: nothing of the command
// runs, its call returns an error, and no process of it is left.
func TestAbortedGateRunsNothing(t *testing.T) {
	g := startGated(t, "plan")
	g.waiting(t)
	g.gate.Abort()
	if err := g.ends(t); err == nil {
		t.Error("an aborted command's call succeeded")
	}
	if g.ran() != "" {
		t.Errorf("an aborted command ran: %q", g.ran())
	}
	if err := g.gate.Open(); err == nil {
		t.Error("an aborted gate opened")
	}
}

// A command whose bwrap was killed while it waited (as terraform-exec
// kills it when the run's context ends, and as its parent-death signal
// does when twokey dies) leaves its sandbox's first process waiting at the
// gate, holding the command's output open. Abort (or the kernel closing a
// dead twokey's descriptors) ends it too, and nothing of the command runs.
func TestAbortEndsASandboxWhoseBwrapWasKilled(t *testing.T) {
	g := startGated(t, "plan")
	g.waiting(t)
	g.killBwrap(t)
	g.gate.Abort()
	if err := g.ends(t); err == nil {
		t.Error("a killed command's call succeeded")
	}
	if g.ran() != "" {
		t.Errorf("the command ran: %q", g.ran())
	}
}

// An opened gate's command is interrupted as any other.
func TestInterruptReachesAGatedCommand(t *testing.T) {
	g := startGated(t, "wait")
	if err := os.MkdirAll(g.work, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := g.gate.Open(); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(g.out.String(), "ready"); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the gated command did not start: %q", g.out.String())
		}
	}
	for deadline := time.Now().Add(10 * time.Second); !g.box.Interrupt(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("Interrupt found no gated command to interrupt")
		}
	}
	err := g.ends(t)
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 3 || !strings.Contains(g.out.String(), "interrupted") {
		t.Fatalf("err = %v, output %q: the gated command did not get SIGINT", err, g.out.String())
	}
}

// A gate whose bwrap was killed while it waited does not open: its
// sandbox's init would start the command with nothing that reports,
// interrupts or kills it (the pull request's code could stop itself, and
// the run with it). Kill ends that sandbox, as it ends any of the box's.
func TestGateWhoseBwrapIsGoneDoesNotOpen(t *testing.T) {
	g := startGated(t, "wait")
	g.waiting(t)
	g.killBwrap(t)
	if err := g.gate.Open(); err == nil {
		t.Error("a gate whose bwrap is gone opened")
	}
	time.Sleep(300 * time.Millisecond)
	if g.ran() != "" {
		t.Errorf("the command ran without its bwrap: %q", g.ran())
	}
	g.box.Kill()
	if err := g.ends(t); err == nil {
		t.Error("a killed command's call succeeded")
	}
}

// A gate opened before its command has even started waits for bwrap to
// report the sandbox, and then lets it run; one whose sandbox never comes
// does not open, and its command, started after all, runs nothing.
func TestGateOpensOnceItsSandboxIsReported(t *testing.T) {
	g := startGatedLater(t, "plan")
	opened := make(chan error, 1)
	go func() { opened <- g.gate.Open() }()
	time.Sleep(50 * time.Millisecond)
	if err := os.MkdirAll(g.work, 0o755); err != nil {
		t.Fatal(err)
	}
	g.start(t)
	if err := <-opened; err != nil {
		t.Fatal(err)
	}
	if err := g.ends(t); err != nil || g.ran() != "ran plan\n" {
		t.Fatalf("err %v, ran %q, output %q", err, g.ran(), g.out.String())
	}

	defer bwrap.SetGateSetUp(100 * time.Millisecond)()
	g = startGatedLater(t, "plan")
	if err := g.gate.Open(); err == nil {
		t.Fatal("a gate whose sandbox never came opened")
	}
	if err := os.MkdirAll(g.work, 0o755); err != nil {
		t.Fatal(err)
	}
	g.start(t)
	g.waiting(t)
	g.gate.Abort()
	if err := g.ends(t); err == nil || g.ran() != "" {
		t.Fatalf("err %v, ran %q: a gate that did not open let its command run", err, g.ran())
	}
}
