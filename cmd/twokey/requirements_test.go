package main

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/twokey/twokey/config"
	"github.com/twokey/twokey/devstack/stacktest"
	"github.com/twokey/twokey/runner/ghsim"
)

// GitHub's side of the two-person rule, end to end: staging requires an
// approving review on the head commit from someone who did not write the
// change. Until there is one, the plan message lists what is missing and
// Approve is refused; the PR author's own approving review counts for
// nothing; a dismissed review makes it unmet again.
func TestGitHubRequirementsGateApprovals(t *testing.T) {
	s := newStack(t)
	cfg := s.baseConfig(filepath.Join(s.dir, "data"), stacktest.Tool(t, "terraform"))
	cfg.Projects[0].Environments[0].Requirements = []config.Requirement{config.RequireApproved}
	s.config = s.write("twokey.yaml", cfg)
	s.openPR(1, "web")
	s.gh.SetPull("acme/infra", ghsim.Pull{Number: 1, HeadSHA: s.prs[1], HeadRef: "pr-1", Title: "Change 1", User: "alice-gh"})
	s.startBot()

	s.slash(alice, "plan staging pr-1")
	msg := s.planMessage(1, "GitHub requirements not met")
	s.click(bob, msg, approve)
	s.ephemeral(bob, "GitHub's side of this change does not hold yet")

	// The author approving their own pull request on GitHub changes nothing.
	s.gh.AddReview("acme/infra", 1, ghsim.Review{User: "alice-gh", State: "APPROVED"})
	s.click(bob, msg, approve)
	s.ephemeral(bob, "is the PR author")
	if s.applied("web") {
		t.Fatal("applied without GitHub's requirement")
	}

	review := s.gh.AddReview("acme/infra", 1, ghsim.Review{User: "dave-gh", State: "APPROVED"})
	s.click(bob, msg, approve)
	msg = s.planMessage(1, "1 more needed")
	if content := msg.Content(); strings.Contains(content, "GitHub requirements not met") {
		t.Fatalf("requirements still shown as unmet after an approving review:\n%s", content)
	}

	s.gh.DismissReview("acme/infra", 1, review)
	s.click(carol, msg, approve)
	s.ephemeral(carol, "dismissed")
	if s.applied("web") {
		t.Fatal("applied after the approving review was dismissed")
	}
	s.gh.AddReview("acme/infra", 1, ghsim.Review{User: "erin-gh", State: "APPROVED"})
	s.click(carol, msg, approve)
	s.planMessage(1, "Applied")
	if !s.applied("web") {
		t.Fatal("not applied once GitHub's requirement held again")
	}
}
