package runner_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/twokey/twokey/runner"
)

// A plan's init and plan start behind gates while the commit is checked
// out. Whatever stops the run before its turn (a refused checkout, a failed
// init), nothing of the pull request's code runs, and no process of a
// waiting sandbox is left behind.
func TestStoppedRunStartsNothingItGated(t *testing.T) {
	f := setup(t, 30*time.Second)
	ran := filepath.Join(f.dir, "ran")
	program := fmt.Sprintf(`"echo ran >> %s"`, ran)
	const refused, initFails, runs = "3333333333333333333333333333333333333333",
		"4444444444444444444444444444444444444444", "5555555555555555555555555555555555555555"
	f.src.trees[refused] = lootPR(t, program, "")
	f.src.trees[initFails] = lootPR(t, program, "module \"m\" {\n  source = \"./missing\"\n}\n")
	f.src.trees[runs] = lootPR(t, program, "")
	f.target.Providers = runner.Providers{Allowed: []string{"example.com/twokey/loot"}}
	dataDir := filepath.Join(f.root, "gated-data")
	r, err := f.runner(t, func(o *runner.Options) { o.DataDir = dataDir })
	if err != nil {
		t.Fatal(err)
	}
	plan := func(sha string) error {
		ctx := context.Background()
		lease := f.lease(t)
		defer f.locks.Release(ctx, lease)
		_, err := r.Plan(ctx, runner.PlanJob{PlanID: "p-" + sha[:1], Rev: f.rev(sha), Lease: lease, Target: f.target})
		return err
	}
	// Processes of this runner's sandboxes name its data directory.
	left := func() []string {
		var found []string
		procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
		for _, p := range procs {
			if b, err := os.ReadFile(p); err == nil && strings.Contains(string(b), dataDir) {
				found = append(found, strings.ReplaceAll(string(b), "\x00", " "))
			}
		}
		return found
	}
	for _, c := range []struct {
		sha, why string
		allowPR  bool
	}{{refused, "brings provider binaries", false}, {initFails, "init failed", true}} {
		f.target.Providers.AllowPR = c.allowPR
		err := plan(c.sha)
		if err == nil || !strings.Contains(err.Error(), c.why) {
			t.Fatalf("plan of %s: %v; want an error saying %q", c.sha[:7], err, c.why)
		}
		if b, err := os.ReadFile(ran); err == nil {
			t.Fatalf("the pull request's code ran in a run stopped before plan (%s): %s", c.why, b)
		}
		for deadline := time.Now().Add(5 * time.Second); len(left()) > 0; time.Sleep(10 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("processes of a stopped run (%s) are left: %q", c.why, left())
			}
		}
	}
	// The same plan, allowed, runs its code once.
	if err := plan(runs); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(ran); string(b) != "ran\n" {
		t.Fatalf("the allowed plan's code ran %q times", b)
	}
}

// killingSource checks a commit out once it has killed the bwrap of the
// plan's gate, which waits meanwhile (as the OOM killer, an operator or a
// stray signal could): the sandbox's init, which bwrap named in the gate's
// info file, is left waiting without it.
type killingSource struct {
	*dirSource
	data string
}

func (s killingSource) Checkout(ctx context.Context, rev runner.Revision, dst string) error {
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		infos, _ := filepath.Glob(filepath.Join(s.data, "runs", "*", "plan.*.ctl", "gate2.info"))
		for _, info := range infos {
			var v struct {
				ChildPID int `json:"child-pid"`
			}
			b, _ := os.ReadFile(info)
			if json.Unmarshal(b, &v) != nil || v.ChildPID == 0 {
				continue
			}
			status, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", v.ChildPID))
			var ppid int
			for _, l := range strings.Split(string(status), "\n") {
				if p, ok := strings.CutPrefix(l, "PPid:"); ok {
					ppid, _ = strconv.Atoi(strings.TrimSpace(p))
				}
			}
			if ppid <= 1 {
				return fmt.Errorf("the plan gate's sandbox has no bwrap to kill")
			}
			_ = syscall.Kill(ppid, syscall.SIGKILL)
			return s.dirSource.Checkout(ctx, rev, dst)
		}
	}
	return fmt.Errorf("no waiting plan gate found")
}

// A plan whose gate's bwrap died while it waited fails, and none of the
// pull request's code runs: opened, the gate's orphaned sandbox would
// start it with nothing to report, interrupt or kill it, and code that
// stops itself would hold the run, its environment and its credential for
// as long as it liked.
func TestPlanWhoseGatesBwrapDiedFailsClosed(t *testing.T) {
	f := setup(t, 30*time.Second)
	ran := filepath.Join(f.dir, "ran")
	f.src.trees[sha1] = lootPR(t, fmt.Sprintf(`"echo ran >> %s; kill -STOP -1; exec sleep 1000"`, ran), "")
	f.target.Providers = runner.Providers{Allowed: []string{"example.com/twokey/loot"}, AllowPR: true}
	dataDir := filepath.Join(f.root, "killed-data")
	r, err := f.runner(t, func(o *runner.Options) {
		o.DataDir = dataDir
		o.Source = killingSource{f.src, dataDir}
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	lease := f.lease(t)
	done := make(chan error, 1)
	go func() {
		_, err := r.Plan(ctx, runner.PlanJob{PlanID: "p-1", Rev: f.rev(sha1), Lease: lease, Target: f.target})
		done <- err
	}()
	select {
	case err := <-done:
		if !errors.Is(err, runner.ErrSandbox) {
			t.Errorf("plan: %v; want a sandbox error", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the plan did not end")
	}
	if b, err := os.ReadFile(ran); err == nil {
		t.Fatalf("the pull request's code ran without its bwrap: %s", b)
	}
}

// initTamperer is a Sandbox whose runs have the commit's main.tf
// rewritten as init starts, as code a pull request can have run during
// init does (a backend's credential program: s3's credential_process in a
// config file the pull request ships, kubernetes' exec plugin), in init's
// own sandbox, which may write the run's directory. Prepared is the
// moment: the commit's files are recorded and init is about to start.
type initTamperer struct{ runner.Sandbox }

type tamperingBox struct {
	runner.Box
	dir string
}

func (s initTamperer) Open(run runner.Run) (runner.Box, error) {
	box, err := s.Sandbox.Open(run)
	if err != nil {
		return nil, err
	}
	return tamperingBox{Box: box, dir: run.Dir}, nil
}

func (b tamperingBox) Prepared() error {
	files, _ := filepath.Glob(filepath.Join(b.dir, "src", "infra", "*.tf"))
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return err
		}
		if err := os.WriteFile(f, bytes.ReplaceAll(data, []byte("echo benign"), []byte("echo stolen")), 0o600); err != nil {
			return err
		}
	}
	return b.Box.Prepared()
}

// A plan is of the commit's configuration, whatever ran during init: a
// file of the commit that init's run changed (to a provisioner that would
// run with the apply's credentials; the plan's addresses and actions stay
// the same) is refused before plan runs.
func TestInitCannotChangeTheCommit(t *testing.T) {
	f := setup(t, 30*time.Second)
	f.src.trees[sha1] = map[string]string{"infra/main.tf": `terraform {
  backend "local" {}
}
resource "terraform_data" "a" {
  input = "hello"
  provisioner "local-exec" {
    command = "echo benign"
  }
}
`}
	r, err := f.runner(t, func(o *runner.Options) { o.Sandbox = initTamperer{o.Sandbox} })
	if err != nil {
		t.Fatal(err)
	}
	res, err := r.Plan(context.Background(), runner.PlanJob{PlanID: "p-1", Rev: f.rev(sha1), Lease: f.lease(t), Target: f.target})
	if !errors.Is(err, runner.ErrPlanConfig) || !strings.Contains(err.Error(), "main.tf") {
		t.Fatalf("plan: %v (text %q); want it refused, naming main.tf", err, res.Text)
	}
}
