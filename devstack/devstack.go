// Package devstack runs the real components twokey talks to — redis-server,
// a Vault dev server, git repositories — on loopback, for the end-to-end tests
// and for `twokey demo`. The binaries come from scripts/tools.sh (.tools/bin);
// a missing one is an error that says how to install it, never a skip.
package devstack

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// ToolsEnv names a directory that overrides .tools/bin.
const ToolsEnv = "TWOKEY_TOOLS_BIN"

// Tool returns the path of a tool installed by scripts/tools.sh: terraform,
// tofu, vault, redis-server or chromium.
func Tool(name string) (string, error) {
	if dir := os.Getenv(ToolsEnv); dir != "" {
		return executable(filepath.Join(dir, name))
	}
	root, err := RepoRoot()
	if err != nil {
		return "", fmt.Errorf("%s: %w", name, err)
	}
	return executable(filepath.Join(root, ".tools", "bin", name))
}

func executable(path string) (string, error) {
	st, err := os.Stat(path)
	if err != nil || st.IsDir() || st.Mode()&0o111 == 0 {
		return "", fmt.Errorf("%s is not installed: run scripts/tools.sh", path)
	}
	return path, nil
}

// RepoRoot finds the twokey checkout above the working directory.
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "scripts", "tools.sh")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("not inside a twokey checkout (no scripts/tools.sh above the working directory)")
		}
		dir = parent
	}
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// process is a child server: started in its own process group, killed with
// its children on Stop, and by the kernel if this process dies first.
type process struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
	err  error // valid after done is closed

	stopOnce sync.Once
}

func start(name, path string, args []string, env []string, dir string, logTo io.Writer) (*process, error) {
	cmd := exec.Command(path, args...)
	cmd.Env = env
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = logTo, logTo
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &process{name: name, cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// Pid is the process ID.
func (p *process) Pid() int { return p.cmd.Process.Pid }

// Signal sends sig to the process group.
func (p *process) Signal(sig syscall.Signal) error {
	return syscall.Kill(-p.cmd.Process.Pid, sig)
}

// exited reports whether the process has ended.
func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop asks the process group to terminate, then kills it after grace.
func (p *process) stop(grace time.Duration) error {
	p.stopOnce.Do(func() {
		if p.exited() {
			return
		}
		_ = p.Signal(syscall.SIGCONT) // a stopped process cannot handle SIGTERM
		_ = p.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(grace):
			_ = p.Signal(syscall.SIGKILL)
			<-p.done
		}
	})
	return nil
}

// waitReady polls ready until it succeeds, the process exits, or timeout.
func (p *process) waitReady(ctx context.Context, timeout time.Duration, ready func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last error
	for {
		if p.exited() {
			return fmt.Errorf("%s exited before it was ready: %v", p.name, p.err)
		}
		if last = ready(ctx); last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s not ready after %v: %w", p.name, timeout, last)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func itoa(i int) string { return strconv.Itoa(i) }
