package ghsource

import (
	"context"
	"os/exec"
	"strings"
	"testing"

	"github.com/twokey/twokey/devstack"
	"github.com/twokey/twokey/runner"
	"github.com/twokey/twokey/runner/ghsim"
)

// The PR author (bob-gh, who can push branches) creates a branch "evil"
// off main whose CODEOWNERS owns nothing, and retargets PR 50 at it: the
// head, the plan and its approvals stay. CODEOWNERS is still read from the
// default branch, so infra/prod/main.tf's owners (@acme/net) must approve;
// dave-gh (platform, not net) does not count.
func TestRetargetedBaseKeepsCodeowners(t *testing.T) {
	f := setupRequirements(t)
	ctx := context.Background()
	evil, err := f.repo.Commit(ctx, "evil", f.base, "nobody owns anything", map[string]*string{
		".github/CODEOWNERS": devstack.Str("# no owners\n"),
	})
	if err != nil {
		t.Fatal(err)
	}
	head, err := f.repo.Commit(ctx, "feature2", evil, "change prod", map[string]*string{
		"infra/prod/main.tf": devstack.Str("# v2 evil\n"),
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := f.repo.PublishPull(ctx, 51, head); err != nil {
		t.Fatal(err)
	}
	f.gh.SetPull("acme/infra", ghsim.Pull{Number: 51, HeadSHA: head, HeadRef: "feature2", BaseRef: "evil", User: "bob-gh", Title: "Change prod"})
	f.gh.AddReview("acme/infra", 51, ghsim.Review{User: "dave-gh", State: "APPROVED"})
	rev := f.resolve(t, 51)
	unmet, err := f.src.Requirements(ctx, rev, allRequirements)
	if err != nil {
		t.Fatal(err)
	}
	if got := unmetOf(unmet, runner.RequireCodeOwners); len(got) == 0 || !strings.Contains(strings.Join(got, "\n"), "infra/prod/main.tf") {
		t.Errorf("codeowners met for infra/prod/main.tf without @acme/net, by retargeting the PR at a branch the author made; all unmet: %v", unmet)
	}
}

// main moved on (a fix the PR lacks, which applying the PR's head would
// revert). The author points the PR's base at a branch they made at the
// old main; undiverged still compares against main and stays unmet.
func TestRetargetedBaseKeepsUndiverged(t *testing.T) {
	f := setupRequirements(t)
	ctx := context.Background()
	if _, err := f.repo.Commit(ctx, "main", f.base, "hotfix on main", map[string]*string{
		"infra/prod/fix.tf": devstack.Str("# fix\n"),
	}); err != nil {
		t.Fatal(err)
	}
	unmet, err := f.src.Requirements(ctx, f.resolve(t, 50), []runner.Requirement{runner.RequireUndiverged})
	if err != nil || len(unmet) != 1 {
		t.Fatalf("control: undiverged should be unmet against main: %v %v", unmet, err)
	}
	// The author's branch at the old main (any branch the head contains).
	if out, err := exec.Command("git", "-C", f.repo.Bare, "branch", "old-main", f.base).CombinedOutput(); err != nil {
		t.Fatalf("%v %s", err, out)
	}
	f.gh.SetPull("acme/infra", ghsim.Pull{Number: 50, HeadSHA: f.head, HeadRef: "feature", BaseRef: "old-main", User: "bob-gh", Title: "Change prod"})
	unmet, err = f.src.Requirements(ctx, f.resolve(t, 50), []runner.Requirement{runner.RequireUndiverged})
	if err != nil {
		t.Fatal(err)
	}
	if len(unmet) == 0 {
		t.Errorf("undiverged met after retargeting the PR's base away from main, whose hotfix the head lacks")
	}
}
