package ghsource

import (
	"context"
	"errors"
	"fmt"
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

var allRequirements = []runner.Requirement{runner.RequireApproved, runner.RequireMergeable, runner.RequireUndiverged, runner.RequireCodeOwners}

// unmetOf returns the reasons given for r.
func unmetOf(unmet []runner.Unmet, r runner.Requirement) []string {
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
	if got := unmetOf(unmet, runner.RequireApproved); len(got) != 1 || !strings.Contains(got[0], "no approving review on the head commit "+f.head[:7]+" from someone other than its authors") {
		t.Errorf("approved: unmet = %q", got)
	}
	if got := unmetOf(unmet, runner.RequireCodeOwners); len(got) == 0 || !strings.Contains(strings.Join(got, "\n"), "infra/prod/main.tf") {
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
	unmet, err := f.src.Requirements(ctx, f.resolve(t, 50), []runner.Requirement{runner.RequireCodeOwners})
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Join(unmetOf(unmet, runner.RequireCodeOwners), "\n")
	for _, want := range []string{"infra/prod/main.tf", "@acme/net", ".github/CODEOWNERS", "@alice-gh"} {
		if !strings.Contains(got, want) {
			t.Errorf("codeowners unmet lacks %q: %q", want, got)
		}
	}
	if strings.Contains(got, "README.md") {
		t.Errorf("README.md is @acme/platform's, and dave-gh approved: %q", got)
	}
}

func TestRequirements(t *testing.T) {
	const (
		approved   = runner.RequireApproved
		mergeable  = runner.RequireMergeable
		undiverged = runner.RequireUndiverged
		codeowners = runner.RequireCodeOwners
	)
	review := func(user, state string) func(t *testing.T, f reqFixture) {
		return func(t *testing.T, f reqFixture) {
			f.gh.AddReview("acme/infra", 50, ghsim.Review{User: user, State: state})
		}
	}
	steps := func(fs ...func(t *testing.T, f reqFixture)) func(t *testing.T, f reqFixture) {
		return func(t *testing.T, f reqFixture) {
			for _, fn := range fs {
				fn(t, f)
			}
		}
	}
	// carol-gh is in @acme/net, which owns infra/prod/; dave-gh is in
	// @acme/platform, which owns the rest.
	owners := steps(review("carol-gh", "APPROVED"), review("dave-gh", "APPROVED"))
	tests := []struct {
		name  string
		setup func(t *testing.T, f reqFixture)
		// want maps each requirement to substrings of its reasons; a
		// requirement not listed must be met.
		want map[runner.Requirement][]string
	}{
		{name: "all met", setup: owners},
		{name: "no reviews", setup: func(*testing.T, reqFixture) {}, want: map[runner.Requirement][]string{
			approved:   {"no approving review on the head commit"},
			codeowners: {"infra/prod/main.tf has no approving review from its code owners @acme/net", "README.md has no approving review from its code owners @acme/platform"},
		}},
		{name: "approval dismissed", setup: func(t *testing.T, f reqFixture) {
			owners(t, f)
			for _, id := range []int64{5000, 5001} {
				f.gh.DismissReview("acme/infra", 50, id)
			}
		}, want: map[runner.Requirement][]string{
			approved:   {"carol-gh's review was dismissed", "dave-gh's review was dismissed"},
			codeowners: {"infra/prod/main.tf", "README.md"},
		}},
		{name: "later changes requested cancel an approval", setup: steps(owners, review("carol-gh", "CHANGES_REQUESTED")),
			want: map[runner.Requirement][]string{codeowners: {"infra/prod/main.tf has no approving review from its code owners @acme/net"}}},
		{name: "later dismissed review cancels an approval", setup: steps(owners, review("carol-gh", "DISMISSED"), review("dave-gh", "DISMISSED")),
			want: map[runner.Requirement][]string{approved: {"carol-gh's review was dismissed"}, codeowners: {"infra/prod/main.tf", "README.md"}}},
		{name: "approval after changes requested counts", setup: steps(review("carol-gh", "CHANGES_REQUESTED"), owners)},
		{name: "a later comment changes nothing", setup: steps(owners, review("carol-gh", "COMMENTED"))},
		{name: "stale approval on an older commit", setup: func(t *testing.T, f reqFixture) {
			f.gh.AddReview("acme/infra", 50, ghsim.Review{User: "carol-gh", State: "APPROVED", CommitID: f.base})
			f.gh.AddReview("acme/infra", 50, ghsim.Review{User: "dave-gh", State: "APPROVED", CommitID: f.base})
		}, want: map[runner.Requirement][]string{
			approved:   {"carol-gh approved an older commit"},
			codeowners: {"infra/prod/main.tf", "README.md"},
		}},
		{name: "author renamed since, known by ID", setup: func(t *testing.T, f reqFixture) {
			f.gh.AddUser(ghsim.User{Login: "bob-renamed", ID: 1002})
			review("bob-renamed", "APPROVED")(t, f)
		}, want: map[runner.Requirement][]string{
			approved:   {"bob-renamed approved but is the PR author"},
			codeowners: {"infra/prod/main.tf", "README.md"},
		}},
		{name: "an author in the owning team does not count", setup: steps(review("bob-gh", "APPROVED"), review("dave-gh", "APPROVED")),
			want: map[runner.Requirement][]string{codeowners: {"infra/prod/main.tf has no approving review from its code owners @acme/net"}}},
		{name: "a team GitHub does not show has no members", setup: func(t *testing.T, f reqFixture) {
			f.gh.SetFiles("acme/infra", 50, []ghsim.File{{Name: "a/x.tf"}, {Name: "a/y.tf"}, {Name: "infra/prod/1.tf"}, {Name: "infra/prod/2.tf"}, {Name: "infra/prod/3.tf"}, {Name: "infra/prod/4.tf"}})
			f.gh.AddTeam("acme", "net") // emptied
			if _, err := f.repo.Commit(context.Background(), "main", f.base, "owners", map[string]*string{".github/CODEOWNERS": devstack.Str(baseCodeowners + "/a/ @acme/ghosts\n")}); err != nil {
				t.Fatal(err)
			}
			review("carol-gh", "APPROVED")(t, f)
		}, want: map[runner.Requirement][]string{
			undiverged: {"rebase or merge main"},
			codeowners: {"a/x.tf and a/y.tf have no approving review from their code owners @acme/ghosts (GitHub shows no team @acme/ghosts: it does not exist, or twokey's token may not read its members)",
				"infra/prod/1.tf, infra/prod/2.tf, infra/prod/3.tf and 1 more files have no approving review from their code owners @acme/net"},
		}},
		{name: "owner approval missing for one team", setup: review("alice-gh", "APPROVED"),
			want: map[runner.Requirement][]string{codeowners: {"infra/prod/main.tf has no approving review from its code owners @acme/net"}}},
		{name: "a rename out of an owned directory needs its owners", setup: func(t *testing.T, f reqFixture) {
			f.gh.SetFiles("acme/infra", 50, []ghsim.File{{Name: "misc/old.tf", Previous: "infra/prod/old.tf", Status: "renamed"}})
			review("dave-gh", "APPROVED")(t, f)
		}, want: map[runner.Requirement][]string{codeowners: {"infra/prod/old.tf has no approving review from its code owners @acme/net"}}},
		{name: "un-owned files need nobody", setup: func(t *testing.T, f reqFixture) {
			f.gh.SetFiles("acme/infra", 50, []ghsim.File{{Name: "docs/b.md", Status: "added"}})
			review("alice-gh", "APPROVED")(t, f)
		}},
		{name: "not mergeable", setup: func(t *testing.T, f reqFixture) {
			owners(t, f)
			f.gh.SetMergeable("acme/infra", 50, "dirty", 0)
		}, want: map[runner.Requirement][]string{mergeable: {"GitHub says the pull request is not mergeable (state: dirty)"}}},
		{name: "blocked is still mergeable", setup: func(t *testing.T, f reqFixture) {
			owners(t, f)
			f.gh.SetMergeable("acme/infra", 50, "blocked", 0)
		}},
		{name: "mergeability computed after a while", setup: func(t *testing.T, f reqFixture) {
			owners(t, f)
			f.gh.SetMergeable("acme/infra", 50, "clean", 3)
		}},
		{name: "mergeability never computed", setup: func(t *testing.T, f reqFixture) {
			owners(t, f)
			f.gh.SetMergeable("acme/infra", 50, "unknown", 0)
		}, want: map[runner.Requirement][]string{mergeable: {"GitHub has not computed mergeability"}}},
		{name: "base moved on", setup: func(t *testing.T, f reqFixture) {
			owners(t, f)
			if _, err := f.repo.Commit(context.Background(), "main", f.base, "elsewhere", map[string]*string{"other.tf": devstack.Str("#\n")}); err != nil {
				t.Fatal(err)
			}
		}, want: map[runner.Requirement][]string{undiverged: {"the head does not contain main's tip ", "; rebase or merge main"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := setupRequirements(t)
			tt.setup(t, f)
			unmet, err := f.src.Requirements(context.Background(), f.resolve(t, 50), allRequirements)
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range allRequirements {
				got := strings.Join(unmetOf(unmet, r), "\n")
				if len(tt.want[r]) == 0 && got != "" {
					t.Errorf("%s unmet: %q", r, got)
				}
				if len(tt.want[r]) > 0 && got == "" {
					t.Errorf("%s met, want unmet with %q", r, tt.want[r])
				}
				for _, w := range tt.want[r] {
					if !strings.Contains(got, w) {
						t.Errorf("%s: reasons lack %q: %q", r, w, got)
					}
				}
			}
			if tt.want[mergeable] == nil && tt.name == "mergeability computed after a while" {
				var reads int
				for _, r := range f.gh.Requests() {
					if r.Path == "/api/v3/repos/acme/infra/pulls/50" {
						reads++
					}
				}
				if reads < 4 {
					t.Errorf("the pull request was read %d times; GitHub was still computing for 3", reads)
				}
			}
		})
	}
}

// The undiverged reason names the base's current tip.
func TestRequirementsUndivergedNamesTip(t *testing.T) {
	f := setupRequirements(t)
	tip, err := f.repo.Commit(context.Background(), "main", f.base, "elsewhere", map[string]*string{"other.tf": devstack.Str("#\n")})
	if err != nil {
		t.Fatal(err)
	}
	unmet, err := f.src.Requirements(context.Background(), f.resolve(t, 50), []runner.Requirement{runner.RequireUndiverged})
	if err != nil {
		t.Fatal(err)
	}
	want := "the head does not contain main's tip " + tip[:7] + "; rebase or merge main"
	if len(unmet) != 1 || unmet[0].Reason != want {
		t.Fatalf("unmet = %+v, want %q", unmet, want)
	}
}

// More than a page of changed files: the owned file on the third page is
// found, in the listed diff and in GitHub's own list.
func TestRequirementsFilesPaged(t *testing.T) {
	f := setupRequirements(t)
	ctx := context.Background()
	many := map[string]*string{"infra/prod/z.tf": devstack.Str("# z\n")}
	for i := range 230 {
		many[fmt.Sprintf("docs/gen/f%03d.md", i)] = devstack.Str("x\n")
	}
	head, err := f.repo.Commit(ctx, "feature", f.base, "many files", many)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.repo.PublishPull(ctx, 50, head); err != nil {
		t.Fatal(err)
	}
	f.gh.PushHead("acme/infra", 50, head)
	f.gh.AddReview("acme/infra", 50, ghsim.Review{User: "alice-gh", State: "APPROVED"})
	unmet, err := f.src.Requirements(ctx, f.resolve(t, 50), []runner.Requirement{runner.RequireCodeOwners})
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(unmetOf(unmet, runner.RequireCodeOwners), "\n"); got != "infra/prod/z.tf has no approving review from its code owners @acme/net" {
		t.Errorf("unmet = %q", got)
	}
	var pages int
	for _, r := range f.gh.Requests() {
		if r.Path == "/api/v3/repos/acme/infra/pulls/50/files" {
			pages++
		}
	}
	if pages != 3 {
		t.Errorf("files listed in %d pages, want 3 of 100", pages)
	}
	// A carol-gh approval (@acme/net) meets it.
	f.gh.AddReview("acme/infra", 50, ghsim.Review{User: "carol-gh", State: "APPROVED"})
	if unmet, err := f.src.Requirements(ctx, f.resolve(t, 50), []runner.Requirement{runner.RequireCodeOwners}); err != nil || len(unmet) != 0 {
		t.Errorf("with an owner's approval: unmet = %+v, err = %v", unmet, err)
	}
}

// GitHub lists at most 3000 of a pull request's changed files; the owners
// of the rest are unknown: unmet.
func TestRequirementsTooManyFiles(t *testing.T) {
	f := setupRequirements(t)
	files := make([]ghsim.File, 3001)
	for i := range files {
		files[i] = ghsim.File{Name: fmt.Sprintf("docs/f%d.md", i)} // nobody's
	}
	f.gh.SetFiles("acme/infra", 50, files[:3000])
	unmet, err := f.src.Requirements(context.Background(), f.resolve(t, 50), []runner.Requirement{runner.RequireCodeOwners})
	if err != nil || len(unmet) != 0 {
		t.Fatalf("3000 un-owned files: unmet = %+v, err = %v", unmet, err)
	}
	f.gh.SetFiles("acme/infra", 50, files)
	unmet, err = f.src.Requirements(context.Background(), f.resolve(t, 50), []runner.Requirement{runner.RequireCodeOwners})
	want := "GitHub lists only 3000 of the pull request's 3001 changed files, so the owners of the rest cannot be checked"
	if err != nil || len(unmet) != 1 || unmet[0].Reason != want {
		t.Fatalf("3001 files: unmet = %+v, err = %v", unmet, err)
	}
}

// Where GitHub looks for CODEOWNERS, and none at all.
func TestRequirementsCodeownersLocation(t *testing.T) {
	for _, tt := range []struct {
		files map[string]*string
		want  string
	}{
		{map[string]*string{".github/CODEOWNERS": nil, "CODEOWNERS": devstack.Str("* @erin-gh\n")}, "@erin-gh"},
		{map[string]*string{".github/CODEOWNERS": nil, "docs/CODEOWNERS": devstack.Str("* @dave-gh\n")}, "@dave-gh"},
		{map[string]*string{".github/CODEOWNERS": nil}, "main has no CODEOWNERS file"},
	} {
		f := setupRequirements(t)
		ctx := context.Background()
		base, err := f.repo.Commit(ctx, "main", f.base, "owners", tt.files)
		if err != nil {
			t.Fatal(err)
		}
		head, err := f.repo.Commit(ctx, "feature", base, "change", map[string]*string{"x.tf": devstack.Str("#\n")})
		if err != nil {
			t.Fatal(err)
		}
		if err := f.repo.PublishPull(ctx, 50, head); err != nil {
			t.Fatal(err)
		}
		f.gh.PushHead("acme/infra", 50, head)
		f.gh.AddReview("acme/infra", 50, ghsim.Review{User: "alice-gh", State: "APPROVED"})
		unmet, err := f.src.Requirements(ctx, f.resolve(t, 50), []runner.Requirement{runner.RequireCodeOwners})
		if err != nil {
			t.Fatal(err)
		}
		if len(unmet) != 1 || !strings.Contains(unmet[0].Reason, tt.want) {
			t.Errorf("%v: unmet = %+v, want %q", tt.files, unmet, tt.want)
		}
	}
}

// With dismissal of stale reviews on, a push dismisses the approvals; with
// it off, they stay on the older commit and do not count either.
func TestRequirementsNewCommitAfterApproval(t *testing.T) {
	for _, dismiss := range []bool{true, false} {
		f := setupRequirements(t)
		ctx := context.Background()
		f.gh.SetPull("acme/infra", ghsim.Pull{Number: 50, HeadSHA: f.head, HeadRef: "feature", User: "bob-gh", DismissStaleReviews: dismiss})
		f.gh.AddReview("acme/infra", 50, ghsim.Review{User: "carol-gh", State: "APPROVED"})
		f.gh.AddReview("acme/infra", 50, ghsim.Review{User: "dave-gh", State: "APPROVED"})
		planned := f.resolve(t, 50)
		if unmet, err := f.src.Requirements(ctx, planned, allRequirements); err != nil || len(unmet) != 0 {
			t.Fatalf("before the push: unmet = %+v, err = %v", unmet, err)
		}
		head, err := f.repo.Commit(ctx, "feature", f.head, "sneak", map[string]*string{"infra/prod/main.tf": devstack.Str("# sneaky\n")})
		if err != nil {
			t.Fatal(err)
		}
		if err := f.repo.PublishPull(ctx, 50, head); err != nil {
			t.Fatal(err)
		}
		f.gh.PushHead("acme/infra", 50, head)
		// Checked right before apply with the planned revision: the head moved.
		unmet, err := f.src.Requirements(ctx, planned, allRequirements)
		if err != nil {
			t.Fatal(err)
		}
		if len(unmet) != 4 || !strings.Contains(unmet[0].Reason, "the pull request's head is now "+head[:7]+", not the planned "+f.head[:7]) {
			t.Errorf("dismiss %v: planned revision after a push: unmet = %+v", dismiss, unmet)
		}
		// Planned again: the approvals are for the old commit.
		unmet, err = f.src.Requirements(ctx, f.resolve(t, 50), []runner.Requirement{runner.RequireApproved})
		want := "approved an older commit"
		if dismiss {
			want = "review was dismissed"
		}
		if err != nil || len(unmet) != 1 || !strings.Contains(unmet[0].Reason, want) {
			t.Errorf("dismiss %v: new head: unmet = %+v, err = %v; want %q", dismiss, unmet, err, want)
		}
	}
}

func TestRequirementsClosedPR(t *testing.T) {
	f := setupRequirements(t)
	rev := f.resolve(t, 50)
	for _, tt := range []struct {
		pull ghsim.Pull
		want string
	}{
		{ghsim.Pull{Number: 50, HeadSHA: f.head, State: "closed"}, "the pull request is closed"},
		{ghsim.Pull{Number: 50, HeadSHA: f.head, State: "closed", Merged: true}, "the pull request is merged"},
	} {
		f.gh.SetPull("acme/infra", tt.pull)
		unmet, err := f.src.Requirements(context.Background(), rev, allRequirements)
		if err != nil || len(unmet) != 4 || unmet[3].Reason != tt.want {
			t.Errorf("unmet = %+v, err = %v; want all four %q", unmet, err, tt.want)
		}
	}
}

// Fail closed: any part of GitHub down is an error, never "met".
func TestRequirementsGitHubDown(t *testing.T) {
	f := setupRequirements(t)
	ctx := context.Background()
	rev := f.resolve(t, 50)
	f.gh.AddReview("acme/infra", 50, ghsim.Review{User: "carol-gh", State: "APPROVED"})
	f.gh.AddReview("acme/infra", 50, ghsim.Review{User: "dave-gh", State: "APPROVED"})
	for _, part := range []string{"/pulls/50", "/reviews", "/files", "/compare/", "/contents/", "/teams/", "/collaborators/"} {
		f.gh.FailOn(part)
		unmet, err := f.src.Requirements(ctx, rev, allRequirements)
		if !errors.Is(err, runner.ErrSource) || unmet != nil {
			t.Errorf("%s down: unmet = %+v, err = %v; want ErrSource", part, unmet, err)
		}
	}
	f.gh.FailOn("")
	before := len(f.gh.Requests())
	if unmet, err := f.src.Requirements(ctx, rev, allRequirements); err != nil || len(unmet) != 0 {
		t.Fatalf("GitHub back: unmet = %+v, err = %v", unmet, err)
	}
	// approved and codeowners share one read of the reviews and of each
	// reviewer's permission.
	calls := map[string]int{}
	for _, r := range f.gh.Requests()[before:] {
		calls[r.Path]++
	}
	for _, p := range []string{"/api/v3/repos/acme/infra/pulls/50/reviews", "/api/v3/repos/acme/infra/collaborators/carol-gh/permission"} {
		if calls[p] != 1 {
			t.Errorf("%s read %d times", p, calls[p])
		}
	}
	// The pull request gone.
	if _, err := f.src.Requirements(ctx, runner.Revision{Repo: "acme/infra", PR: 999, SHA: f.head}, allRequirements); !errors.Is(err, runner.ErrPRNotFound) {
		t.Errorf("no such PR: err = %v", err)
	}
	// Waiting for mergeability honours the context.
	f.gh.SetMergeable("acme/infra", 50, "unknown", 0)
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := f.src.Requirements(cctx, rev, []runner.Requirement{runner.RequireMergeable}); err == nil {
		t.Error("cancelled while GitHub computes mergeability: no error")
	}
}

func TestRequirementsNotAPullRequest(t *testing.T) {
	f := setupRequirements(t)
	ctx := context.Background()
	rev, err := f.src.Resolve(ctx, "acme/infra", runner.Ref{SHA: f.base})
	if err != nil {
		t.Fatal(err)
	}
	before := len(f.gh.Requests())
	if unmet, err := f.src.Requirements(ctx, rev, allRequirements); err != nil || unmet != nil {
		t.Errorf("rollback commit: unmet = %+v, err = %v", unmet, err)
	}
	if n := len(f.gh.Requests()) - before; n != 0 {
		t.Errorf("%d requests for a rollback's requirements", n)
	}
	if _, err := f.src.Requirements(ctx, f.resolve(t, 50), []runner.Requirement{"reviewed"}); err == nil {
		t.Error("unknown requirement: no error")
	}
}

// The attack: on a public repository anyone can leave an approving review.
// As in GitHub's branch protection, only reviewers who can write to the
// repository count, for approved and for codeowners.
func TestRequirementsAttackOutsiderApproval(t *testing.T) {
	f := setupRequirements(t)
	f.gh.SetPermission("acme/infra", "carol-gh", "read") // in @acme/net, yet only reads this repository
	f.gh.AddReview("acme/infra", 50, ghsim.Review{User: "carol-gh", State: "APPROVED"})
	f.gh.AddReview("acme/infra", 50, ghsim.Review{User: "mallory", State: "APPROVED"}) // a stranger
	unmet, err := f.src.Requirements(context.Background(), f.resolve(t, 50), allRequirements)
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Join(unmetOf(unmet, runner.RequireApproved), "\n")
	for _, want := range []string{"carol-gh approved but cannot write to acme/infra", "mallory approved but cannot write to acme/infra"} {
		if !strings.Contains(got, want) {
			t.Errorf("approved: reasons lack %q: %q", want, got)
		}
	}
	if got := strings.Join(unmetOf(unmet, runner.RequireCodeOwners), "\n"); !strings.Contains(got, "infra/prod/main.tf has no approving review from its code owners @acme/net") {
		t.Errorf("codeowners: unmet = %q", got)
	}
	// Given write, carol-gh counts.
	f.gh.SetPermission("acme/infra", "carol-gh", "admin")
	unmet, err = f.src.Requirements(context.Background(), f.resolve(t, 50), []runner.Requirement{runner.RequireApproved})
	if err != nil || len(unmet) != 0 {
		t.Errorf("with admin: unmet = %+v, err = %v", unmet, err)
	}
}
