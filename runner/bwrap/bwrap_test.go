package bwrap_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/twokey/twokey/devstack/stacktest"
	"github.com/twokey/twokey/runner"
	"github.com/twokey/twokey/runner/bwrap"
)

// hostile plays code from a pull request: it looks for everything outside
// its run, tries to write outside it, and leaves a process behind.
const hostile = `#!/bin/sh
loot=$LOOT/loot.txt
{
  echo "uid $(id -u)"
  grep -E '^(CapEff|CapBnd|NoNewPrivs):' /proc/self/status
  for n in pid mnt user ipc uts cgroup net; do echo "ns $n $(readlink /proc/self/ns/$n)"; done
  echo "tmp $(ls -A /tmp | tr '\n' ' ')"
  unshare -Ur true 2>/dev/null && echo "made a user namespace"
  echo "pids $(ls /proc | grep -E '^[0-9]+$' | tr '\n' ' ')"
  for p in /proc/[0-9]*; do cat $p/environ $p/cmdline 2>/dev/null | tr '\0' '\n'; done
  cat "$SECRET_FILE" "$DATA_DIR"/*/* 2>/dev/null
  ls -la / "$(dirname "$DATA_DIR")" "$DATA_DIR" 2>&1
  for f in /etc/shadow /root/.vault-token "$HOME/../../secret.txt"; do cat "$f" 2>/dev/null; done
} > "$loot" 2>&1
# Twokey's priority, were this in twokey's session (an autogroup, which the
# kernel lets an unprivileged process renice once per 100 ms machine-wide).
for i in $(seq 50); do
  { echo 19 > /proc/self/autogroup; } 2>/dev/null && { echo "reniced its session" >> "$loot"; break; }
  sleep 0.02
done
echo tampered > "$DATA_DIR/plans/planted" 2>/dev/null && echo "wrote into data_dir" >> "$loot"
echo tampered > "$WRITE_HERE/planted" 2>/dev/null && echo "wrote beside the run" >> "$loot"
# A process that tries to outlive the run, holding the run's stdout.
setsid sh -c 'sleep 30 & exit 0' </dev/null &
( ( sleep 30 ) & ) &
echo done
`

type env struct {
	root, data, loot, secretFile, writeHere, hostTmp string
	secret                                           string
}

func newEnv(t *testing.T) env {
	t.Helper()
	root := stacktest.Dir(t)
	e := env{root: root, data: filepath.Join(root, "data"), loot: stacktest.Writable(t, root, "loot"),
		secretFile: filepath.Join(root, "secret.txt"), writeHere: stacktest.Writable(t, root, "beside"),
		secret: "s3cr3t-" + strconv.FormatInt(time.Now().UnixNano(), 36)}
	for _, d := range []string{filepath.Join(e.data, "plans"), filepath.Join(e.data, "runs")} {
		if err := os.MkdirAll(d, 0o777); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range []string{e.secretFile, filepath.Join(e.data, "plans", "prod.tfplan")} {
		if err := os.WriteFile(f, []byte(e.secret), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(e.data, 0o711); err != nil {
		t.Fatal(err)
	}
	f, err := os.CreateTemp("", "twokey-host-tmp-")
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	e.hostTmp = f.Name()
	t.Cleanup(func() { os.Remove(e.hostTmp) })
	return e
}

func TestHostileRunSeesOnlyItsRun(t *testing.T) {
	e := newEnv(t)
	sb := stacktest.Sandbox(t, e.loot)
	script := filepath.Join(e.root, "hostile.sh")
	if err := os.WriteFile(script, []byte(hostile), 0o755); err != nil {
		t.Fatal(err)
	}
	box, err := sb.Open(runner.Run{Dir: filepath.Join(e.data, "runs", "r1"), Binary: script})
	if err != nil {
		t.Fatal(err)
	}
	defer box.Close()
	if err := box.Prepared(); err != nil {
		t.Fatal(err)
	}
	input, err := box.Input("plan.tfplan", []byte("saved plan"))
	if err != nil {
		t.Fatal(err)
	}

	group, err := os.ReadFile("/proc/self/autogroup")
	if err != nil {
		t.Fatal(err)
	}
	// Both ways a run starts terraform: in the foreground, and behind
	// every other run.
	for _, exe := range []string{box.Exec(), box.Background()} {
		t.Run(filepath.Base(exe), func(t *testing.T) {
			_ = os.Remove(filepath.Join(e.loot, "loot.txt"))
			cmd := exec.Command(exe)
			cmd.Dir = filepath.Join(e.data, "runs", "r1")
			cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // as terraform-exec starts it
			cmd.Env = []string{"PATH=/usr/bin:/bin", "LOOT=" + e.loot, "SECRET_FILE=" + e.secretFile, "DATA_DIR=" + e.data,
				"WRITE_HERE=" + e.writeHere, "HOME=" + filepath.Join(e.data, "runs", "r1", "home")}
			var out bytes.Buffer
			cmd.Stdout = &out
			cmd.Stderr = &out
			// Survivors holding stdout would keep Wait from returning; after the
			// delay, Wait gives up and the test fails.
			cmd.WaitDelay = 10 * time.Second
			if err := cmd.Run(); err != nil {
				t.Fatalf("run: %v\n%s", err, out.String())
			}
			if !strings.Contains(out.String(), "done") {
				t.Fatalf("the script did not run:\n%s", out.String())
			}

			loot, err := os.ReadFile(filepath.Join(e.loot, "loot.txt"))
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("loot:\n%s", loot)
			if bytes.Contains(loot, []byte(e.secret)) {
				t.Error("the run read a file outside its directory")
			}
			for _, s := range []string{"wrote into data_dir", "wrote beside the run"} {
				if bytes.Contains(loot, []byte(s)) {
					t.Error("the run " + s)
				}
			}
			if _, err := os.Stat(filepath.Join(e.writeHere, "planted")); err == nil {
				t.Error("the run wrote outside its directory")
			}
			if !bytes.Contains(loot, []byte("reniced its session")) {
				t.Error("the run could not renice its own session: the check of twokey's proves nothing")
			}
			if now, err := os.ReadFile("/proc/self/autogroup"); err != nil || !bytes.Equal(now, group) {
				t.Errorf("the run changed twokey's autogroup from %q to %q (%v)", group, now, err)
				if f := bytes.Fields(group); len(f) == 3 {
					_ = os.WriteFile("/proc/self/autogroup", f[2], 0)
				}
			}
			// No capabilities, no new privileges; namespaces of its own, but the
			// network; a /tmp of its own.
			for _, want := range []string{"CapEff:\t0000000000000000", "CapBnd:\t0000000000000000", "NoNewPrivs:\t1"} {
				if !bytes.Contains(loot, []byte(want)) {
					t.Errorf("the run's status lacks %q", want)
				}
			}
			for _, ns := range []string{"pid", "mnt", "user", "ipc", "uts", "cgroup", "net"} {
				mine, err := os.Readlink("/proc/self/ns/" + ns)
				if err != nil {
					t.Fatal(err)
				}
				shared := bytes.Contains(loot, []byte("ns "+ns+" "+mine+"\n"))
				if shared != (ns == "net") {
					t.Errorf("namespace %s shared with twokey: %v", ns, shared)
				}
			}
			if bytes.Contains(loot, []byte("made a user namespace")) {
				t.Error("the run can make user namespaces of its own")
			}
			if bytes.Contains(loot, []byte(filepath.Base(e.hostTmp))) {
				t.Error("the run sees the host's /tmp")
			}
			// Its own PID namespace: bwrap's init, the script and what it ran.
			for _, line := range strings.Split(string(loot), "\n") {
				if pids, ok := strings.CutPrefix(line, "pids "); ok {
					if n := len(strings.Fields(pids)); n > 6 {
						t.Errorf("the run sees %d processes: %s", n, pids)
					}
					if strings.Contains(" "+pids, " "+strconv.Itoa(os.Getpid())+" ") && os.Getpid() > 6 {
						t.Errorf("the run sees the test's own process %d", os.Getpid())
					}
				}
			}
			if os.Geteuid() == 0 {
				st, err := os.Stat(filepath.Join(e.loot, "loot.txt"))
				if err != nil {
					t.Fatal(err)
				}
				if uid := st.Sys().(*syscall.Stat_t).Uid; uid != 65534 {
					t.Errorf("a run started by root wrote as uid %d, want 65534", uid)
				}
			}
			// The input is readable and cannot be changed from inside.
			if got, _ := os.ReadFile(filepath.Join(e.data, "runs", "r1.ctl", "in", "plan.tfplan")); string(got) != "saved plan" {
				t.Errorf("input = %q", got)
			}
			if input != filepath.Join(e.data, "runs", "r1", "in", "plan.tfplan") {
				t.Errorf("input is at %s inside", input)
			}
		})
	}
}

func TestInputsAreReadOnlyInside(t *testing.T) {
	e := newEnv(t)
	sb := stacktest.Sandbox(t, e.loot)
	script := filepath.Join(e.root, "tamper.sh")
	if err := os.WriteFile(script, []byte("#!/bin/sh\n{ echo changed > \"$1\"; } 2>/dev/null && echo wrote\nrm -f \"$1\" 2>/dev/null && echo removed\ncat \"$1\"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	box, err := sb.Open(runner.Run{Dir: filepath.Join(e.data, "runs", "r2"), Binary: script})
	if err != nil {
		t.Fatal(err)
	}
	defer box.Close()
	in, err := box.Input("plan.tfplan", []byte("the approved bytes"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(box.Exec(), in)
	cmd.Dir = filepath.Join(e.data, "runs", "r2")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if string(out) != "the approved bytes" {
		t.Fatalf("the run changed its input: %q", out)
	}
}

// A run killed from outside, as when twokey itself is killed, takes every
// process of it along.
func TestKilledRunLeavesNoProcess(t *testing.T) {
	e := newEnv(t)
	sb := stacktest.Sandbox(t, e.loot)
	script := filepath.Join(e.root, "linger.sh")
	if err := os.WriteFile(script, []byte("#!/bin/sh\nsetsid sh -c 'sleep 60' </dev/null 2>/dev/null &\necho started\nsleep 60\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	box, err := sb.Open(runner.Run{Dir: filepath.Join(e.data, "runs", "r3"), Binary: script})
	if err != nil {
		t.Fatal(err)
	}
	defer box.Close()
	for _, exe := range []string{box.Exec(), box.Background()} {
		t.Run(filepath.Base(exe), func(t *testing.T) {
			cmd := exec.Command(exe)
			cmd.Dir = filepath.Join(e.data, "runs", "r3")
			killAlone(t, cmd, started(t, cmd)) // as a killed twokey's children are
		})
	}
}

// started starts cmd as terraform-exec does, a process group of its own,
// with its stdout on a pipe that ends only once no process holds it, and
// reads the start of its output.
func started(t *testing.T, cmd *exec.Cmd) *os.File {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	cmd.Stdout, cmd.SysProcAttr = w, &syscall.SysProcAttr{Setpgid: true}
	err = cmd.Start()
	w.Close()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Read(make([]byte, 8)); err != nil {
		t.Fatal(err)
	}
	return r
}

// killAlone SIGKILLs cmd's process, and only it, and fails unless every
// process that holds its stdout is gone within 10 s.
func killAlone(t *testing.T, cmd *exec.Cmd, stdout *os.File) {
	t.Helper()
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
	done := make(chan struct{})
	go func() { _, _ = io.Copy(io.Discard, stdout); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("a process of the killed run is still alive")
	}
}

func TestStarterKilledBeforeBwrapLeavesNoProcess(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("only where twokey runs as root is a background command started through setsid")
	}
	e := newEnv(t)
	fake := filepath.Join(e.root, "bwrap")
	if err := os.WriteFile(fake, []byte("#!/bin/sh\n[ \"$1\" = --version ] && { echo 'bubblewrap 0.8.0'; exit 0; }\n"+
		"while [ \"$1\" != -- ]; do shift; done\nshift\nexec \"$@\"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	sb, err := bwrap.New(context.Background(), bwrap.Options{Path: fake})
	if err != nil {
		t.Fatal(err)
	}
	script := filepath.Join(e.root, "started.sh")
	if err := os.WriteFile(script, []byte("#!/bin/sh\necho started\nexec sleep 60\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(e.data, "runs", "r6")
	box, err := sb.Open(runner.Run{Dir: dir, Binary: script})
	if err != nil {
		t.Fatal(err)
	}
	defer box.Close()
	cmd := exec.Command(box.Background())
	cmd.Dir = dir
	killAlone(t, cmd, started(t, cmd))
}

func TestInterruptReachesTerraform(t *testing.T) {
	e := newEnv(t)
	sb := stacktest.Sandbox(t, e.loot)
	script := filepath.Join(e.root, "trap.sh")
	if err := os.WriteFile(script, []byte("#!/bin/sh\ntrap 'echo interrupted; exit 3' INT\necho ready\nwhile :; do sleep 0.05; done\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	box, err := sb.Open(runner.Run{Dir: filepath.Join(e.data, "runs", "r4"), Binary: script})
	if err != nil {
		t.Fatal(err)
	}
	defer box.Close()
	cmd := exec.Command(box.Exec())
	cmd.Dir = filepath.Join(e.data, "runs", "r4")
	var out stacktest.Buffer
	cmd.Stdout = &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	for !strings.Contains(out.String(), "ready") {
		time.Sleep(10 * time.Millisecond)
	}
	for !box.Interrupt() {
		time.Sleep(10 * time.Millisecond)
	}
	err = cmd.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 3 || !strings.Contains(out.String(), "interrupted") {
		t.Fatalf("err = %v, output %q: the sandboxed process did not get SIGINT", err, out.String())
	}
}

// Every command a box starts is a session of its own, and so an autogroup
// of its own, which the scheduler weighs as one whatever its processes'
// niceness: none can open a terminal twokey has (the test runs itself again
// under a pseudo-terminal for that), nor renice twokey's own autogroup. A
// background command runs at niceness 19 in an autogroup of niceness 19.
// Where twokey runs as root that holds for as many at once as there are,
// which an unprivileged process, limited to one autogroup renice per 100 ms
// on the whole machine, could not have. Both kinds pass arguments through
// unchanged, and answer terraform-exec's version question alike.
func TestBackgroundRunsBehind(t *testing.T) {
	tty := false
	if f, err := os.Open("/dev/tty"); err == nil {
		f.Close()
		tty = true
	}
	switch {
	case os.Getenv("TWOKEY_TEST_TTY") != "" && !tty:
		t.Fatal("run under a pseudo-terminal, the test has no terminal")
	case !tty:
		t.Run("with a terminal", underTerminal)
	}
	e := newEnv(t)
	sb := stacktest.Sandbox(t, e.loot)
	script := filepath.Join(e.root, "priority.sh")
	if err := os.WriteFile(script, []byte("#!/bin/sh\nprintf 'args'; printf ' [%s]' \"$@\"; echo\n"+
		"echo \"autogroup $(cat /proc/self/autogroup 2>/dev/null)\"\n"+
		"echo \"nice $(awk '{print $19}' /proc/self/stat)\"\n"+
		"(: </dev/tty) 2>/dev/null && echo 'opened the terminal'\n"+
		"[ \"$1\" = fail ] && exit 5; exit 0\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(e.data, "runs", "r5")
	box, err := sb.Open(runner.Run{Dir: dir, Binary: script, Version: []byte(`{"terraform_version":"1.12.2"}`)})
	if err != nil {
		t.Fatal(err)
	}
	defer box.Close()
	run := func(exe string, args ...string) string {
		cmd := exec.Command(exe, args...)
		cmd.Dir = dir
		// As terraform-exec starts it: a process group of its own.
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Errorf("%v: %s", err, out)
		}
		return string(out)
	}
	stat, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		t.Fatal(err)
	}
	mine := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:]))[16] // field 19: nice
	group, err := os.ReadFile("/proc/self/autogroup")
	if err != nil {
		t.Fatal(err)
	}
	// Empty where twokey's session is the first one, which the kernel
	// weighs as the root task group, not as an autogroup: a process that
	// PID 1 started without a session of its own (as some CI runners do).
	// Every command must still be in an autogroup of its own.
	twokeys := ""
	if f := strings.Fields(string(group)); len(f) > 0 {
		twokeys = "autogroup " + f[0] + " "
	}
	args := []string{"show", "-json", "it's a \"plan\" $HOME"}
	for _, c := range []struct {
		exe, nice, groupNice string
	}{{box.Exec(), mine, ""}, {box.Background(), "19", map[bool]string{true: "19"}[os.Geteuid() == 0]}} {
		// Several at once, as a plan's two read-backs and other plans' start.
		outs := make([]string, 4)
		var wg sync.WaitGroup
		for i := range outs {
			wg.Go(func() { outs[i] = run(c.exe, args...) })
		}
		wg.Wait()
		for _, out := range outs {
			if !strings.Contains(out, "args [show] [-json] [it's a \"plan\" $HOME]\n") {
				t.Errorf("%s passed the arguments on changed:\n%s", filepath.Base(c.exe), out)
			}
			if !strings.Contains(out, "nice "+c.nice+"\n") {
				t.Errorf("%s: the command's niceness is not %s:\n%s", filepath.Base(c.exe), c.nice, out)
			}
			if (twokeys != "" && strings.Contains(out, twokeys)) || !strings.Contains(out, "autogroup /autogroup-") {
				t.Errorf("%s: not in an autogroup of its own:\n%s", filepath.Base(c.exe), out)
			}
			if c.groupNice != "" && !regexp.MustCompile(`autogroup /autogroup-\d+ nice `+c.groupNice+`\n`).MatchString(out) {
				t.Errorf("%s: the command's autogroup's niceness is not %s:\n%s", filepath.Base(c.exe), c.groupNice, out)
			}
			if strings.Contains(out, "opened the terminal") {
				t.Errorf("%s: a command opened twokey's terminal:\n%s", filepath.Base(c.exe), out)
			}
		}
		if v := run(c.exe, "version", "-json"); v != `{"terraform_version":"1.12.2"}` {
			t.Errorf("%s answered version -json with %q", filepath.Base(c.exe), v)
		}
		cmd := exec.Command(c.exe, "fail")
		cmd.Dir, cmd.SysProcAttr = dir, &syscall.SysProcAttr{Setpgid: true}
		var ee *exec.ExitError
		if err := cmd.Run(); !errors.As(err, &ee) || ee.ExitCode() != 5 {
			t.Errorf("%s: a command that exits 5 ended with %v", filepath.Base(c.exe), err)
		}
	}
}

// underTerminal runs TestBackgroundRunsBehind again, in a session whose
// controlling terminal is a new pseudo-terminal.
func underTerminal(t *testing.T) {
	ptmx, err := os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer ptmx.Close()
	if err := unix.IoctlSetPointerInt(int(ptmx.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatal(err)
	}
	n, err := unix.IoctlGetInt(int(ptmx.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	pts, err := os.OpenFile("/dev/pts/"+strconv.Itoa(n), os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer pts.Close()
	go func() { _, _ = io.Copy(io.Discard, ptmx) }()
	cmd := exec.Command(os.Args[0], "-test.run", "^TestBackgroundRunsBehind$", "-test.v", "-test.count", "1")
	cmd.Env = append(os.Environ(), "TWOKEY_TEST_TTY=1")
	cmd.Stdin = pts
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	out, err := cmd.CombinedOutput()
	if err != nil || !bytes.Contains(out, []byte("--- PASS: TestBackgroundRunsBehind")) {
		t.Fatalf("under a terminal: %v\n%s", err, out)
	}
}

func TestAutoFailsClosed(t *testing.T) {
	dir := stacktest.Dir(t)
	broken := filepath.Join(dir, "bwrap")
	// A bwrap that cannot make namespaces, as on a host that forbids
	// unprivileged user namespaces.
	if err := os.WriteFile(broken, []byte("#!/bin/sh\n[ \"$1\" = --version ] && { echo 'bubblewrap 0.8.0'; exit 0; }\necho 'bwrap: No permissions to create new namespace' >&2\nexit 1\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{broken, filepath.Join(dir, "missing")} {
		_, err := bwrap.New(context.Background(), bwrap.Options{Path: path})
		if err == nil {
			t.Fatalf("%s: a sandbox that cannot start was accepted", path)
		}
		t.Logf("%s: %v", filepath.Base(path), err)
	}
	if _, err := bwrap.New(context.Background(), bwrap.Options{Writable: []string{"relative/path"}}); err == nil {
		t.Fatal("a relative path was accepted")
	}
}

// BenchmarkSandboxStart is the cost of starting one process in a run's
// sandbox; BenchmarkBareStart starts the same process plainly.
func BenchmarkSandboxStart(b *testing.B) {
	root := stacktest.Dir(b)
	sb := stacktest.Sandbox(b)
	truePath, err := exec.LookPath("true")
	if err != nil {
		b.Fatal(err)
	}
	box, err := sb.Open(runner.Run{Dir: filepath.Join(root, "run"), Binary: truePath})
	if err != nil {
		b.Fatal(err)
	}
	defer box.Close()
	for b.Loop() {
		cmd := exec.Command(box.Exec())
		cmd.Dir = filepath.Join(root, "run")
		if out, err := cmd.CombinedOutput(); err != nil {
			b.Fatalf("%v: %s", err, out)
		}
	}
}

func BenchmarkBareStart(b *testing.B) {
	for b.Loop() {
		if err := exec.Command("true").Run(); err != nil {
			b.Fatal(err)
		}
	}
}

// A run that leaves a tree deeper than twokey has file descriptors for
// does not keep the next run of its kind from starting.
func TestDeepTreeDoesNotBlockTheNextRun(t *testing.T) {
	e := newEnv(t)
	sb := stacktest.Sandbox(t)
	script := filepath.Join(e.root, "deep.sh")
	if err := os.WriteFile(script, []byte("#!/bin/sh\nexec perl -e 'for (1..30000) { mkdir \"d\" or die; chdir \"d\" or die }'\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(e.data, "runs", "plan-acme-prod")
	for i := range 2 {
		box, err := sb.Open(runner.Run{Dir: dir, Binary: script})
		if err != nil {
			t.Fatalf("run %d: %v", i, err)
		}
		cmd := exec.Command(box.Exec())
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
		if err := box.Close(); err != nil {
			t.Logf("run %d left its directory: %v", i, err)
		}
	}
}
