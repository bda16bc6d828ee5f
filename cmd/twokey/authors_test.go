package main

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"testing"

	"github.com/twokey/twokey/config"
	"github.com/twokey/twokey/devstack"
	"github.com/twokey/twokey/devstack/stacktest"
	"github.com/twokey/twokey/runner/ghsim"
)

// openAuthoredPR opens pull request n by the GitHub account author, with one
// commit whose message is msg (trailers and all).
func (s *stack) openAuthoredPR(n int, author, msg string, resources ...string) {
	s.t.Helper()
	s.openPR(n, resources...)
	ctx := context.Background()
	sha, err := s.repo.Commit(ctx, branchOf(n), s.prs[n], msg, map[string]*string{"NOTES.md": devstack.Str(msg + "\n")})
	if err != nil {
		s.t.Fatal(err)
	}
	if err := s.repo.PublishPull(ctx, n, sha); err != nil {
		s.t.Fatal(err)
	}
	s.gh.SetPull("acme/infra", ghsim.Pull{Number: n, HeadSHA: sha, HeadRef: branchOf(n), Title: "Change by " + author, User: author})
	s.prs[n] = sha
}

func branchOf(n int) string { return fmt.Sprintf("pr-%d", n) }

// The people who wrote a change cannot be the two who let it through: the
// PR's author (bob), a co-author named by a Co-authored-by trailer
// (carol), and the author of its commits as GitHub attributes them by
// address (erin) are each refused with the reason, and none of their
// clicks counts; dave, who wrote nothing, counts.
func TestAuthorsCannotApprove(t *testing.T) {
	s := newStack(t)
	// Every commit the test repository makes is by twokey@localhost, which
	// GitHub attributes to erin's account.
	s.gh.AddUser(ghsim.User{Login: "erin-gh", ID: 1005, Emails: []string{"twokey@localhost"}})
	s.slack.SetGroup(group, bob, carol, dave)
	s.openAuthoredPR(4, "bob-gh", "Pair work\n\nCo-authored-by: Carol <1003+carol-gh@users.noreply.github.com>", "web")
	s.startBot()

	s.slash(alice, "plan staging pr-4")
	msg := s.planMessage(4, "Plan ready for review")

	s.click(bob, msg, approve)
	s.ephemeral(bob, "GitHub *bob-gh* is its PR author")
	s.click(carol, msg, approve)
	s.ephemeral(carol, "GitHub *carol-gh* is its co-author")
	s.click(erin, msg, approve)
	s.ephemeral(erin, "GitHub *erin-gh* is its commit author")

	s.click(dave, msg, approve)
	msg = s.planMessage(4, "Approved by <@"+dave+"> — 1 more needed")
	if s.applied("web") {
		t.Fatal("applied with one approval that counts")
	}
	// A second click by the PR author still does not count.
	s.click(bob, msg, approve)
	s.ephemeral(bob, "you cannot approve it")
	if s.applied("web") {
		t.Fatal("applied after an author clicked twice")
	}
}

// An approver without a linked GitHub account is refused where approvers
// must be linked (the default for a protected environment), and told how
// to link.
func TestUnlinkedApproverRefused(t *testing.T) {
	s := newStack(t)
	cfg := s.baseConfig(filepath.Join(s.dir, "data"), stacktest.Tool(t, "terraform"))
	cfg.Identities = slices.DeleteFunc(cfg.Identities, func(id config.Identity) bool { return id.Slack == carol })
	s.config = s.write("unlinked.yaml", cfg)
	s.openPR(5, "web")
	s.startBot()

	s.slash(alice, "plan staging pr-5")
	msg := s.planMessage(5, "Plan ready for review")
	s.click(carol, msg, approve)
	s.ephemeral(carol, "Approvers here need a linked GitHub account")
	s.ephemeral(carol, "`identities`")
	s.click(bob, msg, approve)
	msg = s.planMessage(5, "1 more needed")
	if s.applied("web") {
		t.Fatal("applied with an unlinked approver's click")
	}
	s.click(erin, msg, approve)
	s.planMessage(5, "Applied")

}
