package ghsource

import (
	"context"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/twokey/twokey/config"
	"github.com/twokey/twokey/devstack"
	"github.com/twokey/twokey/runner"
	"github.com/twokey/twokey/runner/ghsim"
)

// reqFixture is a repository whose base branch's CODEOWNERS gives
// infra/prod/ to @acme/net, and PR 50 by bob-gh changing infra/prod/main.tf
// and README.md. Its commits are erin-gh's (devstack commits as
// twokey@localhost).
type reqFixture struct {
	gh   *ghsim.Server
	repo *devstack.GitRepo
	src  *Source
	base string // main's tip
	head string // PR 50's head
}

const baseCodeowners = `# Default owners
*                 @acme/platform
# Production is the network team's; docs are anyone's.
/infra/prod/      @acme/net
/docs/
.github/CODEOWNERS @alice-gh
`

func setupRequirements(t *testing.T) reqFixture {
	t.Helper()
	ctx := context.Background()
	repo, err := devstack.NewGitRepo(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	base, err := repo.Commit(ctx, "main", "", "init", map[string]*string{
		"README.md": devstack.Str("# infra\n"), "infra/prod/main.tf": devstack.Str("# v0\n"),
		".github/CODEOWNERS": devstack.Str(baseCodeowners), "docs/a.md": devstack.Str("a\n"),
	})
	if err != nil {
		t.Fatal(err)
	}
	head, err := repo.Commit(ctx, "feature", base, "change prod", map[string]*string{
		"README.md": devstack.Str("# infra v1\n"), "infra/prod/main.tf": devstack.Str("# v1\n"),
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := repo.PublishPull(ctx, 50, head); err != nil {
		t.Fatal(err)
	}
	gh := ghsim.New()
	gh.Token = "ghs_test_token_0123456789abcdef"
	gh.AddRepo("acme/infra", repo.CloneURL())
	gh.AddUser(ghsim.User{Login: "alice-gh", ID: 1001})
	gh.AddUser(ghsim.User{Login: "bob-gh", ID: 1002})
	gh.AddUser(ghsim.User{Login: "carol-gh", ID: 1003})
	gh.AddUser(ghsim.User{Login: "dave-gh", ID: 1004})
	gh.AddUser(ghsim.User{Login: "erin-gh", ID: 1005, Emails: []string{"twokey@localhost"}})
	gh.AddTeam("acme", "net", "carol-gh", "bob-gh")
	gh.AddTeam("acme", "platform", "dave-gh", "alice-gh")
	gh.SetPull("acme/infra", ghsim.Pull{Number: 50, HeadSHA: head, HeadRef: "feature", User: "bob-gh", Title: "Change prod"})
	srv := httptest.NewServer(gh)
	t.Cleanup(srv.Close)
	src, err := New(Options{APIURL: srv.URL + "/api/v3/", Token: config.Secret(gh.Token), MirrorDir: t.TempDir(),
		MergeableBackoff: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	return reqFixture{gh: gh, repo: repo, src: src, base: base, head: head}
}

func (f reqFixture) resolve(t *testing.T, pr int) runner.Revision {
	t.Helper()
	rev, err := f.src.Resolve(context.Background(), "acme/infra", runner.Ref{PR: pr})
	if err != nil {
		t.Fatal(err)
	}
	return rev
}

var allRequirements = []config.Requirement{config.RequireApproved, config.RequireMergeable, config.RequireUndiverged, config.RequireCodeOwners}

// unmetOf returns the reasons given for r.
func unmetOf(unmet []config.Unmet, r config.Requirement) []string {
	var out []string
	for _, u := range unmet {
		if u.Requirement == r {
			out = append(out, u.Reason)
		}
	}
	return out
}

// The attack: the PR's author (and its commit author) approve their own
// pull request on GitHub. Neither approval counts, for approved or for
// codeowners (bob-gh is in @acme/net).
func TestRequirementsAttackSelfApproval(t *testing.T) {
	f := setupRequirements(t)
	f.gh.AddReview("acme/infra", 50, ghsim.Review{User: "bob-gh", State: "APPROVED"})
	f.gh.AddReview("acme/infra", 50, ghsim.Review{User: "ERIN-GH", State: "APPROVED"}) // the committer, by login in another case
	unmet, err := f.src.Requirements(context.Background(), f.resolve(t, 50), allRequirements)
	if err != nil {
		t.Fatal(err)
	}
	if got := unmetOf(unmet, config.RequireApproved); len(got) != 1 || !strings.Contains(got[0], "no approving review on the head commit "+f.head[:7]+" from someone other than its authors") {
		t.Errorf("approved: unmet = %q", got)
	}
	if got := unmetOf(unmet, config.RequireCodeOwners); len(got) == 0 || !strings.Contains(strings.Join(got, "\n"), "infra/prod/main.tf") {
		t.Errorf("codeowners: unmet = %q", got)
	}
}

// The attack: the author rewrites CODEOWNERS in the pull request so that
// they (or a friend) own everything. Ownership is read from the base
// branch, so the change to CODEOWNERS itself needs its base owner.
func TestRequirementsAttackCodeownersInHead(t *testing.T) {
	f := setupRequirements(t)
	ctx := context.Background()
	head, err := f.repo.Commit(ctx, "feature", f.head, "own everything", map[string]*string{
		".github/CODEOWNERS": devstack.Str("* @dave-gh\n"), "CODEOWNERS": devstack.Str("* @dave-gh\n"),
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := f.repo.PublishPull(ctx, 50, head); err != nil {
		t.Fatal(err)
	}
	f.gh.PushHead("acme/infra", 50, head)
	f.gh.AddReview("acme/infra", 50, ghsim.Review{User: "dave-gh", State: "APPROVED"})
	unmet, err := f.src.Requirements(ctx, f.resolve(t, 50), []config.Requirement{config.RequireCodeOwners})
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Join(unmetOf(unmet, config.RequireCodeOwners), "\n")
	for _, want := range []string{"infra/prod/main.tf", "@acme/net", ".github/CODEOWNERS", "@alice-gh"} {
		if !strings.Contains(got, want) {
			t.Errorf("codeowners unmet lacks %q: %q", want, got)
		}
	}
	if strings.Contains(got, "README.md") {
		t.Errorf("README.md is @acme/platform's, and dave-gh approved: %q", got)
	}
}
