package runner_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twokey/twokey/devstack/stacktest"
	"github.com/twokey/twokey/runner"
)

// A plan's init and plan start behind gates while the commit is checked
// out. Whatever stops the run before its turn (a refused checkout, a failed
// init), nothing of the pull request's code runs, and no process of a
// waiting sandbox is left behind.
func TestStoppedRunStartsNothingItGated(t *testing.T) {
	f := setup(t, 30*time.Second)
	ran := filepath.Join(f.dir, "ran")
	config := fmt.Sprintf(`terraform {
  backend "local" {}
  required_providers {
    loot = { source = "example.com/twokey/loot", version = "1.0.0" }
  }
}
data "loot_run" "x" {
  program = "echo ran >> %s"
}
`, ran)
	provider := "infra/terraform.d/plugins/example.com/twokey/loot/1.0.0/linux_amd64/terraform-provider-loot_v1.0.0"
	const refused, initFails, runs = "3333333333333333333333333333333333333333",
		"4444444444444444444444444444444444444444", "5555555555555555555555555555555555555555"
	loot := string(stacktest.LootProvider(t))
	f.src.trees[refused] = map[string]string{"infra/main.tf": config, provider: loot}
	f.src.trees[initFails] = map[string]string{"infra/main.tf": config + "module \"m\" {\n  source = \"./missing\"\n}\n", provider: loot}
	f.src.trees[runs] = map[string]string{"infra/main.tf": config, provider: loot}
	f.target.Providers = runner.Providers{Allowed: []string{"example.com/twokey/loot"}}
	dataDir := filepath.Join(f.root, "gated-data")
	r, err := f.runner(t, func(o *runner.Options) { o.DataDir = dataDir })
	if err != nil {
		t.Fatal(err)
	}
	plan := func(sha string) error {
		ctx := context.Background()
		lease, err := f.locks.Acquire(ctx, runner.LockKey("acme", "staging"), runner.Holder{User: "UREQ", PR: 42}, f.target.LockTTL)
		if err != nil {
			t.Fatal(err)
		}
		defer f.locks.Release(ctx, lease)
		_, err = r.Plan(ctx, runner.PlanJob{PlanID: "p-" + sha[:1], Rev: f.rev(sha), Lease: lease, Target: f.target})
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
