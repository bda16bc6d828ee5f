package runner

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// Sandbox confines every process of a run: terraform, and every provider
// and program it starts, which at plan time is code from the pull request.
type Sandbox interface {
	// Open creates run.Dir (which must not exist) and its box.
	Open(run Run) (Box, error)
	// String says what isolation runs get, for logs and check-config.
	String() string
}

// Run is what a box is opened for.
type Run struct {
	Dir    string // the run's directory, created by Open
	Binary string // terraform or tofu
	// Writable are more host paths this run, and only this run, sees
	// read-write: its environment's local backend state directory.
	Writable []string
	// Version is what this very binary file answered to `version -json`
	// when this process checked it. A box may answer terraform-exec's
	// `version -json` with it rather than start the binary to ask again.
	// nil: the binary is asked.
	Version []byte
}

// Box is one run's sandbox. Its directory holds home/ and tmp/, and the
// caller checks the revision out into it before calling Prepared.
type Box interface {
	// Exec is the executable terraform-exec starts instead of the binary.
	Exec() string
	// Background is Exec for work that should wait for other runs'
	// terraform rather than slow it down (a plan's read-back once its
	// changes are shown): what it starts gets the CPU only when no other
	// run wants it. A box that cannot do that returns Exec.
	Background() string
	// TempDir is the run's own temporary directory, as its processes see
	// it (TMPDIR).
	TempDir() string
	// Prepared is called once the caller has filled the run's directory.
	Prepared() error
	// Input places data where every later command of the run reads it and
	// none can change it, and returns that path.
	Input(name string, data []byte) (string, error)
	// Interrupt asks the running command to stop gracefully (SIGINT), and
	// reports whether there was one to ask.
	Interrupt() bool
	// Kill ends every command of the box at once, with every process it
	// started, whatever state they are in.
	Kill()
	// Close ends the run and removes its directory.
	Close() error
}

// Gater is a Box that can set up a command's sandbox ahead of its turn,
// while the run does something else (checks the commit out, runs the
// command before it): the command then waits, and starts when its gate
// opens, in the time terraform alone takes to start.
type Gater interface {
	// Gate returns a gate for one terraform command that is to run in dir,
	// a directory of the run that need not exist until the gate opens. An
	// error means the command cannot wait here; it is started in its turn.
	Gate(dir string) (Gate, error)
}

// Gate holds one command at the start until it is opened.
type Gate interface {
	// Exec is the executable terraform-exec starts the command through.
	Exec() string
	// Open lets the command start.
	Open() error
	// Abort ends a command that was never let go, and its sandbox, before
	// anything of it starts; the command's call then returns an error.
	Abort()
}

// ErrSandbox means a run's sandbox could not be set up, so nothing ran.
var ErrSandbox = errors.New("the sandbox could not be set up")

// Unconfined runs terraform as a plain child process, with only the
// environment allowlist between it and twokey: `runner.sandbox: none`, an
// explicit and loud opt-out.
type Unconfined struct{}

var _ Sandbox = Unconfined{}

func (Unconfined) String() string {
	return "none: UNSANDBOXED, terraform and the pull request's code run as twokey's own user"
}

// Open creates the run's directory.
func (Unconfined) Open(run Run) (Box, error) {
	for _, d := range []string{run.Dir, filepath.Join(run.Dir, "home"), filepath.Join(run.Dir, "tmp"), filepath.Join(run.Dir, "in")} {
		if err := os.Mkdir(d, 0o700); err != nil {
			os.RemoveAll(run.Dir)
			return nil, err
		}
	}
	return unconfined(run), nil
}

type unconfined Run

func (u unconfined) Exec() string       { return u.Binary }
func (u unconfined) Background() string { return u.Binary }
func (u unconfined) TempDir() string    { return filepath.Join(u.Dir, "tmp") }
func (u unconfined) Prepared() error    { return nil }
func (u unconfined) Interrupt() bool    { return false } // terraform-exec sends SIGINT itself
func (u unconfined) Kill()              {}               // terraform-exec kills it itself
func (u unconfined) Close() error       { return os.RemoveAll(u.Dir) }

func (u unconfined) Input(name string, data []byte) (string, error) {
	if name != filepath.Base(name) {
		return "", fmt.Errorf("input name %q", name)
	}
	p := filepath.Join(u.Dir, "in", name)
	return p, os.WriteFile(p, data, 0o400)
}

// interruptGrace is how long terraform has to save its state after SIGINT
// before the whole run is killed; terraform-exec waits as long.
const interruptGrace = time.Minute

// confine returns the context terraform commands of box run under. When
// ctx ends, the running command is asked to stop (SIGINT) and the returned
// context ends interruptGrace later, which kills the run.
func confine(ctx context.Context, box Box) (context.Context, func()) {
	if _, ok := box.(unconfined); ok {
		return ctx, func() {} // terraform-exec interrupts it directly
	}
	hard, cancel := context.WithCancel(context.WithoutCancel(ctx))
	stop := context.AfterFunc(ctx, func() {
		// A command starting as ctx ends may not have its pid yet; a
		// second SIGINT would make terraform stop without saving state.
		for i := 0; i < 10 && !box.Interrupt(); i++ {
			select {
			case <-hard.Done():
				return
			case <-time.After(100 * time.Millisecond):
			}
		}
		t := time.NewTimer(interruptGrace)
		defer t.Stop()
		select {
		case <-hard.Done():
		case <-t.C:
			cancel()
			box.Kill() // a sandbox whose bwrap is gone, which cancel does not reach
		}
	})
	return hard, func() { stop(); cancel() }
}
