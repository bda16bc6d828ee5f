package ghsource

import (
	"context"
	"testing"

	"github.com/twokey/twokey/approvals"
	"github.com/twokey/twokey/devstack"
	"github.com/twokey/twokey/runner"
	"github.com/twokey/twokey/runner/ghsim"
)

// Resolving a pull request reads who wrote it: the PR's author, each
// commit's author and committer (attributed to accounts by address, as
// GitHub does) and Co-authored-by trailers, each account once.
func TestResolveAuthors(t *testing.T) {
	f := setup(t)
	ctx := context.Background()
	head, err := f.repo.Commit(ctx, "feature", f.v1, "more\n\nCo-authored-by: Carol <1003+carol-gh@users.noreply.github.com>\nCo-authored-by: Dan <dan@example.com>",
		map[string]*string{"b.tf": devstack.Str("# b\n")})
	if err != nil {
		t.Fatal(err)
	}
	if err := f.repo.PublishPull(ctx, 43, head); err != nil {
		t.Fatal(err)
	}
	f.gh.AddUser(ghsim.User{Login: "bob-gh", ID: 1002})
	f.gh.AddUser(ghsim.User{Login: "erin-gh", ID: 1005, Emails: []string{"twokey@localhost"}}) // devstack's commits
	f.gh.SetPull("acme/infra", ghsim.Pull{Number: 43, HeadSHA: head, HeadRef: "feature", User: "bob-gh"})

	rev, err := f.src.Resolve(ctx, "acme/infra", runner.Ref{PR: 43})
	if err != nil {
		t.Fatal(err)
	}
	want := []approvals.Author{
		{Login: "bob-gh", ID: 1002, As: "PR author"},
		{Login: "erin-gh", ID: 1005, Email: "twokey@localhost", As: "commit author"},
		{Login: "carol-gh", ID: 1003, Email: "1003+carol-gh@users.noreply.github.com", As: "co-author"},
		{Email: "dan@example.com", As: "co-author"},
	}
	if len(rev.Authors) != len(want) {
		t.Fatalf("authors = %+v", rev.Authors)
	}
	for i := range want {
		if rev.Authors[i] != want[i] {
			t.Errorf("authors[%d] = %+v, want %+v", i, rev.Authors[i], want[i])
		}
	}
	// One page holds them all: the commits are listed once.
	var commitsCalls int
	for _, r := range f.gh.Requests() {
		if r.Path == "/api/v3/repos/acme/infra/pulls/43/commits" {
			commitsCalls++
		}
	}
	if commitsCalls != 1 {
		t.Errorf("commits listed %d times", commitsCalls)
	}
}
