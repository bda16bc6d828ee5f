// Package bwrap is runner.Sandbox on bubblewrap, the unprivileged sandbox
// Flatpak uses: every terraform process of a run, and every provider and
// program it starts, runs in its own PID, mount, user, IPC and UTS
// namespaces, sees only the run's directory (read-write), its read-only
// inputs, the terraform binary and the system's libraries and certificates,
// and dies with the run.
//
// terraform-exec starts a binary by path, so each run gets short shell
// scripts that exec bwrap with the run's arguments (read from a file the
// sandbox cannot see) and terraform's: one for its commands, one for those
// that run behind every other run (Background), and one for each command
// started ahead of its turn behind a gate (Gate). Each command is a session
// of its own. Where twokey runs as root, they first drop to an unprivileged
// uid with setpriv, so not even an escape from the user namespace lands as
// root.
package bwrap

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/twokey/twokey/runner"
)

// Options configure a Sandbox.
type Options struct {
	// Path is the bwrap binary; default "bwrap" from PATH.
	Path string
	// ReadOnly are host paths every run sees read-only at the same place:
	// a provider mirror, a CLI config file.
	ReadOnly []string
	// Writable are host paths every run sees read-write: a local backend's
	// state directory. Nothing of twokey's own belongs here.
	Writable []string
	// UID and GID are what a run drops to when twokey runs as root;
	// default 65534 (nobody). Ignored otherwise: the run keeps twokey's uid
	// outside its user namespace, and nothing inside it.
	UID, GID int
}

// system is what every run sees read-only, where it exists: programs and
// libraries (for providers, `data "external"` programs and git), and the
// files that name resolution and TLS need.
var system = []string{
	"/usr", "/etc/ssl", "/etc/ca-certificates", "/etc/pki", "/etc/resolv.conf", "/etc/hosts",
	"/etc/nsswitch.conf", "/etc/host.conf", "/etc/gai.conf", "/etc/localtime", "/etc/alternatives",
}

// Sandbox is a runner.Sandbox.
type Sandbox struct {
	o       Options
	bwrap   string
	setpriv string // set when runs drop from root
	setsid  string // set with setpriv
	nice    string // nice(1), if there is one
	version string

	mu     sync.Mutex
	staged map[string]string // binary → its copy that the run's uid can read
}

var _ runner.Sandbox = (*Sandbox)(nil)

// New finds bwrap and proves it can start a sandbox here, or says why not.
func New(ctx context.Context, o Options) (*Sandbox, error) {
	if o.Path == "" {
		o.Path = "bwrap"
	}
	if o.UID == 0 {
		o.UID = 65534
	}
	if o.GID == 0 {
		o.GID = 65534
	}
	for _, p := range append(append([]string(nil), o.ReadOnly...), o.Writable...) {
		if !filepath.IsAbs(p) {
			return nil, fmt.Errorf("sandbox path %q is not absolute", p)
		}
	}
	path, err := exec.LookPath(o.Path)
	if err != nil {
		return nil, fmt.Errorf("bubblewrap not found (install the bubblewrap package): %w", err)
	}
	s := &Sandbox{o: o, bwrap: path, staged: map[string]string{}}
	if os.Geteuid() == 0 {
		if s.setpriv, err = exec.LookPath("setpriv"); err != nil {
			return nil, fmt.Errorf("running as root, runs drop to uid %d with setpriv (util-linux), which is missing: %w", o.UID, err)
		}
		if s.setsid, err = exec.LookPath("setsid"); err != nil {
			return nil, fmt.Errorf("running as root, runs start in sessions of their own with setsid (util-linux), which is missing: %w", err)
		}
	}
	if nice, err := exec.LookPath("nice"); err == nil {
		// Only where every run sees it.
		if nice, err = filepath.EvalSymlinks(nice); err == nil && strings.HasPrefix(nice, "/usr/") {
			s.nice = nice
		}
	}
	out, err := exec.CommandContext(ctx, path, "--version").Output()
	if err != nil {
		return nil, fmt.Errorf("%s --version: %w", path, err)
	}
	s.version = strings.TrimSpace(string(out))
	if err := s.probe(ctx); err != nil {
		return nil, fmt.Errorf("bubblewrap cannot start a sandbox on this host (are unprivileged user namespaces allowed?): %w", err)
	}
	return s, nil
}

// probe starts an empty run.
func (s *Sandbox) probe(ctx context.Context) error {
	dir, err := os.MkdirTemp("", "twokey-probe-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	if err := os.Chmod(dir, 0o711); err != nil {
		return err
	}
	truePath, err := exec.LookPath("true")
	if err != nil {
		return err
	}
	box, err := s.Open(runner.Run{Dir: filepath.Join(dir, "run"), Binary: truePath})
	if err != nil {
		return err
	}
	defer box.Close()
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, box.Exec())
	cmd.Dir, cmd.Stderr = filepath.Join(dir, "run"), &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%w: %s", err, strings.TrimSpace(stderr.String()))
	}
	return nil
}

func (s *Sandbox) String() string {
	drop := ""
	if s.setpriv != "" {
		drop = fmt.Sprintf(", uid %d", s.o.UID)
	}
	return fmt.Sprintf("%s: own PID, mount, user, IPC, UTS and cgroup namespaces%s; only the run's directory is writable", s.version, drop)
}

// box is one run's sandbox.
type box struct {
	s        *Sandbox
	root     string // the run's control directory, outside the sandbox's view
	dir      string // the run's directory, read-write inside
	in       string // read-only inputs: root/in, seen inside at dir/in
	exe      string
	bg       string // exe, behind every other run (Background)
	info     string
	dropping bool
	drop     string // the start of every script's command: setpriv, where runs drop from root
	args     string // the file bwrap reads the box's arguments from
	bin      string // terraform, as the box sees it
	version  string // the binary's answer to `version -json`, if known

	mu    sync.Mutex
	gates []*gate
}

// Open prepares run.Dir (which must not exist) and returns its box.
//
//	<parent>/<name>        the run's directory: read-write, the only one
//	<parent>/<name>.ctl/   the box's arguments, script and status; inputs in in/
func (s *Sandbox) Open(run runner.Run) (runner.Box, error) {
	b := &box{s: s, dir: run.Dir, root: run.Dir + ".ctl", dropping: s.setpriv != ""}
	b.in, b.exe, b.info = filepath.Join(b.root, "in"), filepath.Join(b.root, "terraform"), filepath.Join(b.root, "info")
	b.bg = filepath.Join(b.root, "terraform-behind")
	for _, p := range []string{run.Dir, b.root} {
		if err := clear(p); err != nil {
			return nil, err
		}
	}
	if err := os.Mkdir(b.root, 0o711); err != nil {
		return nil, err
	}
	fail := func(err error) (runner.Box, error) { os.RemoveAll(b.root); return nil, err }
	if err := os.Mkdir(b.in, 0o755); err != nil {
		return fail(err)
	}
	for _, d := range []string{run.Dir, filepath.Join(run.Dir, "home"), filepath.Join(run.Dir, "tmp")} {
		if err := os.Mkdir(d, 0o700); err != nil {
			return fail(err)
		}
		if err := b.own(d); err != nil {
			return fail(err)
		}
	}
	bin, err := s.stage(run.Binary, filepath.Join(filepath.Dir(run.Dir), ".bin"))
	if err != nil {
		return fail(err)
	}
	args := []string{
		"--unshare-all", "--unshare-user", "--disable-userns", "--share-net", "--die-with-parent",
		"--cap-drop", "ALL", "--hostname", "twokey-run",
		"--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp",
	}
	args = append(args, mounts(system, "--ro-bind")...)
	// Merged /usr: /bin, /lib… are links into it.
	for _, l := range []string{"/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"} {
		if t, err := os.Readlink(l); err == nil {
			args = append(args, "--symlink", t, l)
		} else if st, err := os.Stat(l); err == nil && st.IsDir() {
			args = append(args, "--ro-bind", l, l)
		}
	}
	args = append(args, mounts(s.o.ReadOnly, "--ro-bind")...)
	args = append(args, mounts(s.o.Writable, "--bind")...)
	args = append(args, mounts(run.Writable, "--bind")...)
	args = append(args, "--ro-bind", bin, bin, "--bind", run.Dir, run.Dir,
		"--ro-bind", b.in, filepath.Join(run.Dir, "in"))
	if b.dropping {
		args = append(args, "--uid", strconv.Itoa(s.o.UID), "--gid", strconv.Itoa(s.o.GID))
	}
	for _, a := range args {
		if strings.IndexByte(a, 0) >= 0 {
			return fail(fmt.Errorf("sandbox argument %q holds a NUL byte", a))
		}
	}
	// Each command is a session of its own, and so an autogroup of its
	// own, which the scheduler weighs as one whatever its processes'
	// niceness, and which any process in it may renice: none can reach a
	// terminal twokey has, nor change the priority of twokey's session.
	// bwrap makes the session (--new-session), inside the sandbox. A
	// background command's autogroup asks for niceness 19 too, which the
	// kernel grants an unprivileged process once per 100 ms on the whole
	// machine; so where twokey runs as root, setsid makes the session, and
	// root renices it, before the privileges are dropped.
	argsFile, sessionMade := filepath.Join(b.root, "args"), filepath.Join(b.root, "args-session-made")
	for path, list := range map[string][]string{argsFile: append([]string{"--new-session"}, args...), sessionMade: args} {
		if err := os.WriteFile(path, []byte(strings.Join(list, "\x00")+"\x00"), 0o600); err != nil {
			return fail(err)
		}
	}
	// terraform-exec's environment, which the runner builds from an
	// allowlist, passes through bwrap unchanged.
	if b.dropping {
		// The uid change clears the parent-death signal terraform-exec
		// set; it is set again for the moments before bwrap sets its own.
		b.drop = fmt.Sprintf(" %s --reuid=%d --regid=%d --clear-groups --inh-caps=-all --bounding-set=-all --no-new-privs --pdeathsig=KILL --",
			quote(s.setpriv), s.o.UID, s.o.GID)
	}
	b.args, b.bin = argsFile, bin
	if run.Version != nil {
		// terraform-exec asks `version -json` of each working directory's
		// terraform once; the runner asked this very file already.
		b.version = filepath.Join(b.root, "version")
		if err := os.WriteFile(b.version, run.Version, 0o600); err != nil {
			return fail(err)
		}
	}
	const renice = `/bin/sh -c '{ echo 19 >/proc/self/autogroup; } 2>/dev/null; exec "$@"' sh`
	const behind = "run terraform in this run's sandbox, behind every other run"
	// Every script starts bwrap in the run's directory, where
	// terraform-exec started it.
	here := `"$PWD"`
	tf := b.script("run terraform in this run's sandbox", "", argsFile, here, "", quote(bin)+` "$@"`, true)
	bg := b.script(behind, "", argsFile, here, "", renice+" "+s.niced()+quote(bin)+` "$@"`, true)
	if b.dropping {
		bg = b.script(behind, " "+quote(s.setsid)+" --wait "+renice, sessionMade, here, "", s.niced()+quote(bin)+` "$@"`, true)
	}
	// The same box for another program of the run (a verification's smoke
	// program), which is the script's first argument.
	for path, text := range map[string]string{b.exe: tf, b.bg: bg,
		filepath.Join(b.root, "run"): b.script("run a program in this run's sandbox", "", argsFile, here, "", `"$@"`, false)} {
		if err := writeScript(path, text); err != nil {
			return fail(err)
		}
	}
	return b, nil
}

// script is a shell script that starts command in the box: bwrap reads the
// box's arguments from args, writes what it started to info (see
// Interrupt), and changes to dir (a shell word) inside, after gate's
// redirection, if any, has given it the gate's FIFO as descriptor 5 and
// the gate's info file as descriptor 4. A terraform script answers
// `version -json` itself where the binary's answer is known.
func (b *box) script(what, before, args, dir, gate, command string, terraform bool) string {
	info, block := " 4>"+quote(b.info), ""
	if gate != "" {
		info, block = gate, " --block-fd 5"
	}
	text := fmt.Sprintf("#!/bin/sh\n# twokey: %s\nexec%s%s %s --args 3 --info-fd 4%s --chdir %s -- %s 3<%s%s\n",
		what, before, b.drop, quote(b.s.bwrap), block, dir, command, quote(args), info)
	if terraform && b.version != "" {
		short := fmt.Sprintf("\nif [ $# -eq 2 ] && [ \"$1\" = version ] && [ \"$2\" = -json ]; then exec cat %s; fi\nexec", quote(b.version))
		text = strings.Replace(text, "\nexec", short, 1)
	}
	return text
}

// writeScript writes an executable script while no process is being
// started: a child forked meanwhile would hold it open for writing until it
// execs, and a start of the script then would fail (ETXTBSY).
func writeScript(path, text string) error {
	syscall.ForkLock.RLock()
	defer syscall.ForkLock.RUnlock()
	return os.WriteFile(path, []byte(text), 0o700)
}

func mounts(paths []string, flag string) []string {
	var out []string
	for _, p := range paths {
		if _, err := os.Stat(p); err != nil {
			continue
		}
		out = append(out, flag, p, p)
	}
	return out
}

// quote quotes s for sh.
func quote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// stage returns the path of bin that a run can start. A run that drops from
// root may not reach the binary where it is (under a 0700 home), so it then
// gets a hard link or, across file systems, a copy, made once per file
// (a binary replaced at the same path is staged afresh), in dir.
func (s *Sandbox) stage(bin, dir string) (string, error) {
	bin, err := filepath.EvalSymlinks(bin)
	if err != nil || s.setpriv == "" || reachable(bin) {
		return bin, err
	}
	st, err := os.Stat(bin)
	if err != nil {
		return "", err
	}
	var ino uint64
	if sys, ok := st.Sys().(*syscall.Stat_t); ok {
		ino = sys.Ino
	}
	p := filepath.Join(dir, fmt.Sprintf("%s-%d-%d-%d", filepath.Base(bin), st.Size(), st.ModTime().UnixNano(), ino))
	s.mu.Lock()
	defer s.mu.Unlock()
	key := bin + "\x00" + p
	if _, ok := s.staged[key]; ok {
		return p, nil
	}
	if err := os.MkdirAll(dir, 0o711); err != nil {
		return "", err
	}
	if _, err := os.Stat(p); err != nil {
		tmp := fmt.Sprintf("%s.tmp%d", p, os.Getpid())
		if os.Link(bin, tmp) != nil {
			if err := copyFile(bin, tmp); err != nil {
				return "", err
			}
		}
		if err := os.Rename(tmp, p); err != nil {
			return "", err
		}
	}
	s.staged[key] = p
	return p, nil
}

// reachable reports whether anyone may execute path: every directory on
// the way allows others through, and the file allows others to run it.
func reachable(path string) bool {
	st, err := os.Stat(path)
	if err != nil || st.Mode().Perm()&0o005 != 0o005 {
		return false
	}
	for d := filepath.Dir(path); ; d = filepath.Dir(d) {
		st, err := os.Stat(d)
		if err != nil || st.Mode().Perm()&0o001 == 0 {
			return false
		}
		if d == "/" {
			return true
		}
	}
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o755)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// own gives path to the uid a run drops to.
func (b *box) own(path string) error {
	if !b.dropping {
		return nil
	}
	return os.Lchown(path, b.s.o.UID, b.s.o.GID)
}

func (b *box) Exec() string { return b.exe }

func (b *box) Background() string { return b.bg }

// niced is the start of a command that runs at niceness 19, or nothing
// where there is no nice(1).
func (s *Sandbox) niced() string {
	if s.nice == "" {
		return ""
	}
	return quote(s.nice) + " -n 19 "
}

// Command runs its arguments, a program and its own, in the box
// (runner.Commander).
func (b *box) Command() string { return filepath.Join(b.root, "run") }

// TempDir is the run's private /tmp (a tmpfs of its own): short enough for
// the unix sockets providers listen on, whatever the run's directory.
func (b *box) TempDir() string { return "/tmp" }

// Prepared hands the run's directory, filled from outside, to the run's uid.
func (b *box) Prepared() error {
	if !b.dropping {
		return nil
	}
	return filepath.WalkDir(b.dir, func(p string, _ os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return b.own(p)
	})
}

// Input places data where every later command of the run reads it and none
// can change it, and returns that path.
func (b *box) Input(name string, data []byte) (string, error) {
	if name != filepath.Base(name) || name == "." || name == ".." {
		return "", fmt.Errorf("input name %q", name)
	}
	p := filepath.Join(b.in, name)
	if err := os.WriteFile(p+".tmp", data, 0o644); err != nil {
		return "", err
	}
	if err := os.Rename(p+".tmp", p); err != nil {
		return "", err
	}
	return filepath.Join(b.dir, "in", name), nil
}

// Interrupt asks the sandboxed terraform to stop (SIGINT), as terraform-exec
// would ask an unsandboxed one: bwrap does not pass signals on, so they go
// straight to the processes bwrap started, those of the box's command and
// of every opened gate's.
func (b *box) Interrupt() bool {
	infos := []string{b.info}
	b.mu.Lock()
	for _, g := range b.gates {
		if g.opened {
			infos = append(infos, g.info)
		}
	}
	b.mu.Unlock()
	sent := false
	for _, info := range infos {
		pid, ok := started(info)
		if !ok {
			continue
		}
		kids, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
		if err != nil {
			continue
		}
		for _, f := range strings.Fields(string(kids)) {
			if pid, err := strconv.Atoi(f); err == nil && syscall.Kill(pid, syscall.SIGINT) == nil {
				sent = true
			}
		}
	}
	return sent
}

// started returns the first process of the sandbox whose bwrap wrote info
// (the namespace's init, which starts the command), if it is still running.
// A command that already ended leaves a stale pid there, which another
// process may have by now: the pid counts only while it is the init of a
// PID namespace, the very one bwrap made.
func started(info string) (int, bool) {
	data, err := os.ReadFile(info)
	if err != nil {
		return 0, false
	}
	var v struct {
		ChildPID int    `json:"child-pid"`
		PidNS    uint64 `json:"pid-namespace"`
	}
	if json.Unmarshal(data, &v) != nil || v.ChildPID <= 0 || !nsInit(v.ChildPID) {
		return 0, false
	}
	var st syscall.Stat_t
	if err := syscall.Stat(fmt.Sprintf("/proc/%d/ns/pid", v.ChildPID), &st); err == nil && st.Ino != v.PidNS {
		return 0, false
	}
	return v.ChildPID, true
}

// Kill ends every command of the box that still runs, or waits at a gate,
// with every process of its sandbox: its namespace's init is killed, which
// the kernel takes as the end of the namespace. Nothing in the sandbox can
// stop that (a stopped process is killed as well), nor does it need bwrap,
// which may be gone.
func (b *box) Kill() {
	infos := []string{b.info}
	b.mu.Lock()
	for _, g := range b.gates {
		infos = append(infos, g.info)
	}
	b.mu.Unlock()
	for _, info := range infos {
		if pid, ok := started(info); ok {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

// gate is a runner.Gate. The command started through exe has its sandbox
// set up at once by bwrap, which then waits (--block-fd) on a FIFO only
// twokey can reach and only twokey holds open for writing, and then starts
// the command through a link in the run's read-only inputs. Twokey makes
// that link only as it opens the gate: whatever else ends bwrap's wait (an
// end of file, as when the gate is aborted or twokey dies) starts nothing,
// and the sandbox ends.
type gate struct {
	b      *box
	exe    string
	info   string
	link   string   // where Open links the binary: in the box's inputs
	fifo   *os.File // held open until the box closes, or the gate is aborted
	opened bool
	closed bool // aborted
}

// Gate returns a gate for one terraform command that runs in dir, which
// need not exist until the gate is opened.
func (b *box) Gate(dir string) (runner.Gate, error) {
	if b.version == "" {
		// terraform-exec would ask the binary's version through the gate,
		// and then wait for a second opening.
		return nil, errors.New("the binary's version is not known")
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	n := fmt.Sprintf("gate%d", len(b.gates)+1)
	name := filepath.Join(b.root, n)
	if err := syscall.Mkfifo(name, 0o600); err != nil {
		return nil, err
	}
	// Read-write, so that opening it never waits; the script opens it to
	// read only, so that its end of file comes when this closes.
	fifo, err := os.OpenFile(name, os.O_RDWR, 0)
	if err != nil {
		return nil, err
	}
	g := &gate{b: b, exe: name + ".terraform", info: name + ".info", link: filepath.Join(b.in, "."+n), fifo: fifo}
	inside := filepath.Join(b.dir, "in", "."+n)
	redirs := " 4>" + quote(g.info) + " 5<" + quote(name)
	text := b.script("run terraform in this run's sandbox once twokey opens its gate", "", b.args, quote(dir), redirs, quote(inside)+` "$@"`, true)
	if err := writeScript(g.exe, text); err != nil {
		fifo.Close()
		return nil, err
	}
	b.gates = append(b.gates, g)
	return g, nil
}

func (g *gate) Exec() string { return g.exe }

// gateSetUp bounds how long Open waits for bwrap to report the sandbox it
// set up: milliseconds, unless the machine is starved.
var gateSetUp = 5 * time.Second

// Open links the binary where the command starts it, and lets it start,
// once bwrap has reported the sandbox (its info file names the namespace's
// init, which Kill can then always end), and unless bwrap is gone by then
// (killed while it waited): that init would start the command with nothing
// that reports, interrupts or kills it but Kill.
func (g *gate) Open() error {
	pid := 0
	for deadline := time.Now().Add(gateSetUp); ; time.Sleep(200 * time.Microsecond) {
		var ok bool
		if pid, ok = started(g.info); ok {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("bwrap did not report the sandbox within %v", gateSetUp)
		}
	}
	g.b.mu.Lock()
	defer g.b.mu.Unlock()
	if g.closed {
		return errors.New("the gate was aborted")
	}
	if g.opened {
		return nil
	}
	if !underBwrap(pid, filepath.Base(g.b.s.bwrap)) {
		return errors.New("the sandbox's bwrap is gone")
	}
	g.opened = true
	if err := os.Symlink(g.b.bin, g.link); err != nil {
		return err
	}
	_, err := g.fifo.Write([]byte{1})
	return err
}

// Abort ends the wait of a command that was never let go: bwrap reads the
// end of file, finds nothing to start, and ends with its sandbox.
func (g *gate) Abort() {
	g.b.mu.Lock()
	defer g.b.mu.Unlock()
	if !g.opened && !g.closed {
		g.closed = true
		g.fifo.Close()
	}
}

// underBwrap reports whether pid's parent is still bwrap (named name): a
// process whose parent died has been given to another.
func underBwrap(pid int, name string) bool {
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(status), "\n") {
		if ppid, ok := strings.CutPrefix(line, "PPid:"); ok {
			comm, err := os.ReadFile(fmt.Sprintf("/proc/%s/comm", strings.TrimSpace(ppid)))
			return err == nil && strings.TrimSpace(string(comm)) == name[:min(len(name), 15)]
		}
	}
	return false
}

// nsInit reports whether pid is the first process of a PID namespace below
// this one: its NSpid line ends in 1.
func nsInit(pid int) bool {
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(status), "\n") {
		if ids, ok := strings.CutPrefix(line, "NSpid:"); ok {
			f := strings.Fields(ids)
			return len(f) >= 2 && f[len(f)-1] == "1"
		}
	}
	return false
}

// Close removes the run's directory and the box, and aborts every gate
// that was not opened.
func (b *box) Close() error {
	b.mu.Lock()
	for _, g := range b.gates {
		if !g.closed {
			g.closed = true
			g.fifo.Close()
		}
	}
	b.mu.Unlock()
	return errors.Join(removeAll(b.dir), removeAll(b.root))
}

// removeAll removes a tree a run made. Go's RemoveAll, which follows no
// link, removes an ordinary one without starting a process; a tree the
// run's code made unwritable, or deeper than this process has file
// descriptors for (Go's RemoveAll holds one per level), is left to rm,
// which walks without that limit, and a chmod pass when rm alone cannot.
func removeAll(dir string) error {
	if _, err := os.Lstat(dir); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if os.RemoveAll(dir) == nil {
		return nil
	}
	rm := func() error {
		out, err := exec.Command("rm", "-rf", "--one-file-system", "--", dir).CombinedOutput()
		if err != nil {
			return fmt.Errorf("remove %s: %w: %.200s", dir, err, out)
		}
		return nil
	}
	if rm() == nil {
		return nil
	}
	_ = exec.Command("chmod", "-R", "u+rwx", "--", dir).Run()
	return rm()
}

// clear makes path free for a new run: what an earlier run left there (it
// could not be removed) is moved aside and removed in the background, so
// one run's leftovers never stop the next.
func clear(path string) error {
	if _, err := os.Lstat(path); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	var rnd [6]byte
	_, _ = rand.Read(rnd[:])
	aside := filepath.Join(filepath.Dir(path), ".removing-"+hex.EncodeToString(rnd[:]))
	if err := os.Rename(path, aside); err != nil {
		return err
	}
	go func() { _ = removeAll(aside) }()
	return nil
}
