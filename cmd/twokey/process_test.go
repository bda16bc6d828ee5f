package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

var full = flag.Bool("twokey.full", false, "run the randomized end-to-end tests at full size")

// mainArgsEnv makes the test binary run `twokey` with these arguments
// instead of the tests: the end-to-end tests start real bot processes this
// way, to kill them.
const mainArgsEnv = "TWOKEY_TEST_MAIN_ARGS"

// nondumpableEnv makes the test binary a process that waits to be read,
// after nondumpable() when it is "true".
const nondumpableEnv = "TWOKEY_TEST_NONDUMPABLE"

func TestMain(m *testing.M) {
	if v := os.Getenv(nondumpableEnv); v != "" {
		if v == "true" && nondumpable() != nil {
			os.Exit(2)
		}
		fmt.Print("ready")
		time.Sleep(time.Minute)
		os.Exit(0)
	}
	if raw := os.Getenv(mainArgsEnv); raw != "" {
		var args []string
		if err := json.Unmarshal([]byte(raw), &args); err != nil {
			os.Exit(2)
		}
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
		code := Main(ctx, args, os.Stdout, os.Stderr, os.Getenv)
		stop()
		os.Exit(code)
	}
	os.Exit(m.Run())
}

// botProcess is `twokey serve` in its own OS process.
type botProcess struct {
	cmd  *exec.Cmd
	done chan struct{}
}

// startBotProcess starts `twokey serve --config config` as a child process
// with the bot's usual environment and waits until it is connected to Slack.
func (s *stack) startBotProcess(config string, flags ...string) *botProcess {
	s.t.Helper()
	env := map[string]string{}
	for _, k := range []string{"SLACK_BOT_TOKEN", "SLACK_APP_TOKEN", "VAULT_TOKEN", "GITHUB_TOKEN", "TWOKEY_PLAN_KEY"} {
		env[k] = s.env(k)
	}
	before := s.slack.Connections()
	p := s.startProcess(append([]string{"serve", "--config", config}, flags...), env)
	if err := s.slack.WaitConnected(before+1, 30*time.Second); err != nil {
		s.t.Fatalf("bot process did not connect: %v\nlogs:\n%s", err, s.logs.String())
	}
	return p
}

// startProcess starts `twokey <args>` as a child process whose environment
// is exactly env (plus PATH and HOME), so a test controls which
// credentials it holds.
func (s *stack) startProcess(args []string, env map[string]string) *botProcess {
	s.t.Helper()
	full, err := json.Marshal(append(args, "--log-format", "text", "--log-level", "debug"))
	if err != nil {
		s.t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0])
	cmd.Env = []string{mainArgsEnv + "=" + string(full), "PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	cmd.Stdout, cmd.Stderr = s.logs, s.logs
	if err := cmd.Start(); err != nil {
		s.t.Fatal(err)
	}
	p := &botProcess{cmd: cmd, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(p.done) }()
	s.t.Cleanup(func() { p.kill() })
	return p
}

// stop ends the process as SIGTERM does and waits for it to exit, which
// serve does once the work it started has finished.
func (p *botProcess) stop(t testing.TB) {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.done:
	case <-time.After(waitFor):
		t.Fatalf("process %d did not stop within %v of SIGTERM", p.cmd.Process.Pid, waitFor)
	}
	if code := p.cmd.ProcessState.ExitCode(); code != 0 {
		t.Errorf("process %d exited %d after SIGTERM", p.cmd.Process.Pid, code)
	}
}

// kill ends the process at once (SIGKILL): no cleanup runs.
func (p *botProcess) kill() {
	_ = p.cmd.Process.Kill()
	<-p.done
}

// serve and runner are non-dumpable: a process of the same uid without
// CAP_SYS_PTRACE cannot read their environment or memory.
func TestProcessesAreNotDumpable(t *testing.T) {
	setpriv, err := exec.LookPath("setpriv")
	if err != nil {
		t.Fatalf("setpriv (util-linux) is needed to play a process without capabilities: %v", err)
	}
	// Both sides run without capabilities, as a non-root deployment does.
	noCaps := []string{"--inh-caps=-all", "--bounding-set=-all", "--no-new-privs", "--"}
	start := func(dumpable bool) *exec.Cmd {
		cmd := exec.Command(setpriv, append(noCaps, os.Args[0])...)
		cmd.Env = append(os.Environ(), nondumpableEnv+"="+fmt.Sprint(!dumpable), "PLANTED=secret-in-environ")
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
		if _, err := out.Read(make([]byte, 5)); err != nil { // "ready"
			t.Fatal(err)
		}
		return cmd
	}
	read := func(pid int, file string) error {
		out, err := exec.Command(setpriv, append(noCaps, "head", "-c", "64", fmt.Sprintf("/proc/%d/%s", pid, file))...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("%v: %s", err, out)
		}
		return nil
	}
	if err := read(start(true).Process.Pid, "environ"); err != nil {
		t.Fatalf("the reader cannot read an ordinary process, so this test proves nothing: %v", err)
	}
	target := start(false)
	for _, f := range []string{"environ", "mem", "maps"} {
		if err := read(target.Process.Pid, f); err == nil {
			t.Errorf("/proc/%s of a non-dumpable process is readable by another process of its uid", f)
		}
	}

	// And serve makes itself so (here it runs in this test's process).
	s := newStack(t)
	// Earlier tests may have run serve in this process already.
	if err := unix.Prctl(unix.PR_SET_DUMPABLE, 1, 0, 0, 0); err != nil {
		t.Fatal(err)
	}
	// A descriptor inherited without close-on-exec, as from a careless
	// parent, would reach every child, sandboxed runs included.
	fd, err := unix.Open(os.DevNull, unix.O_RDONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	s.startBot()
	if d, _ := unix.PrctlRetInt(unix.PR_GET_DUMPABLE, 0, 0, 0, 0); d != 0 {
		t.Fatal("serve left its process dumpable")
	}
	if flags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err != nil || flags&unix.FD_CLOEXEC == 0 {
		t.Fatalf("serve left an inherited descriptor open for its children (flags %d, %v)", flags, err)
	}
}
