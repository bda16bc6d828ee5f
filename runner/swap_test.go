package runner_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twokey/twokey/devstack/stacktest"
	"github.com/twokey/twokey/runner"
)

// swapProgram runs at plan time, beside terraform, as a pull request's
// provider or `data "external"` program can. It makes a second plan from a
// configuration that is not in the pull request (a provisioner that steals
// the apply's credentials), and once terraform has written the saved plan,
// puts its own in its place. The plan people would read is the pull
// request's; the addresses and actions are the same.
const swapProgram = `
W=$PWD
RUN=$(cd ../.. && pwd)
TF=$(for p in /proc/[0-9]*; do readlink $p/exe; done 2>/dev/null | grep -m1 terraform)
STATE=$(sed -n 's/.*"path": *"\([^"]*\)".*/\1/p' $W/.terraform/terraform.tfstate | head -1)
mkdir -p $RUN/evil && cd $RUN/evil
cat > main.tf <<'XX'
terraform {
  backend "local" {}
  required_providers {
    loot = { source = "example.com/twokey/loot", version = "1.0.0" }
  }
}
data "loot_run" "x" {
  program = "echo benign"
}
resource "terraform_data" "a" {
  input = "hello"
  provisioner "local-exec" {
    command = "env > OUTDIR/stolen.txt"
  }
}
XX
cp -r $W/terraform.d $W/.terraform.lock.hcl .
$TF init -input=false -backend-config=path=$STATE > /dev/null 2>&1
$TF plan -input=false -lock=false -out=evil.tfplan > /dev/null 2>&1
( while [ ! -s $RUN/plan.tfplan ]; do :; done; mv $RUN/evil/evil.tfplan $RUN/plan.tfplan && echo swapped > OUTDIR/swapped ) </dev/null >/dev/null 2>&1 &
echo ready
`

// A plan swapped by the pull request's code is refused: its configuration
// is not the commit's. Whichever way the race goes, the hidden
// configuration never runs with the apply's credentials.
func TestSwappedPlanIsRefused(t *testing.T) {
	f := setup(t, 30*time.Second)
	f.src.trees[sha1] = lootPR(t, "<<-EOT\n"+strings.ReplaceAll(swapProgram, "OUTDIR", f.dir)+"\n  EOT",
		"resource \"terraform_data\" \"a\" {\n  input = \"hello\"\n}\n")
	f.target.Providers = runner.Providers{Allowed: []string{"example.com/twokey/loot"}, AllowPR: true}
	ctx := context.Background()
	lease := f.lease(t)
	res, err := f.r.Plan(ctx, runner.PlanJob{PlanID: "p1", Rev: f.rev(sha1), Lease: lease, Target: f.target})
	_, swapErr := os.Stat(filepath.Join(f.dir, "swapped"))
	swapped := swapErr == nil
	t.Logf("swapped: %v; plan: %v", swapped, err)
	switch {
	case swapped && !errors.Is(err, runner.ErrPlanConfig):
		t.Fatalf("a swapped plan was accepted (err %v)", err)
	case err == nil:
		// The swap lost the race: the plan is the commit's; apply it.
		if _, err := f.r.Apply(ctx, runner.ApplyJob{Permit: grant(t, "p1", lease, sha1, res), Rev: f.rev(sha1), Target: f.target}); err != nil {
			t.Fatalf("apply: %v", err)
		}
	case !errors.Is(err, runner.ErrPlanConfig):
		t.Fatalf("plan: %v", err)
	}
	if b, err := os.ReadFile(filepath.Join(f.dir, "stolen.txt")); err == nil {
		t.Fatalf("configuration that is not in the commit ran with the apply's credentials:\n%s", b)
	}
}

// A run sees its own environment's local state directory, read-write, and
// no other environment's.
func TestRunSeesOnlyItsEnvironmentsState(t *testing.T) {
	f := setup(t, 30*time.Second)
	prod := stacktest.Writable(t, f.root, "prod-state")
	if err := os.WriteFile(filepath.Join(prod, "prod.tfstate"), []byte("prod-state-secret-7c1e"), 0o666); err != nil {
		t.Fatal(err)
	}
	f.src.trees[sha1] = lootPR(t, fmt.Sprintf(`"cat %s/prod.tfstate; echo marker-$(ls %s | wc -l)"`, prod, filepath.Dir(f.target.BackendConfig["path"])),
		"output \"found\" {\n  value = data.loot_run.x.output\n}\n")
	f.target.Providers = runner.Providers{Allowed: []string{"example.com/twokey/loot"}, AllowPR: true}
	// No sandbox-wide writable path: the state directory is bound because
	// it is this environment's. The runner's data directory's long name
	// also checks that providers' sockets fit.
	r, err := f.runner(t, func(o *runner.Options) { o.Sandbox = stacktest.Sandbox(t) })
	if err != nil {
		t.Fatal(err)
	}
	f.r = r
	_, res := f.plan(t, "p1", sha1)
	if strings.Contains(res.Text, "prod-state-secret") {
		t.Fatalf("a staging run read prod's state:\n%s", res.Text)
	}
	if !strings.Contains(res.Text, "marker-") || strings.Contains(res.Text, "marker-0") {
		t.Fatalf("the run did not see its own state directory:\n%s", res.Text)
	}
}
