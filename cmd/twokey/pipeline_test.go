package main

import (
	"strings"
	"testing"
)

// applyWithTwoApprovals has bob and carol approve the plan message whose
// header names ref, and waits until it is applied.
func (s *stack) applyWithTwoApprovals(ref string) {
	s.t.Helper()
	msg := s.visible(ref)
	msg = s.waitTS(msg.TS, "Plan ready for review")
	s.click(bob, msg, approve)
	s.click(carol, msg, approve)
	s.waitTS(msg.TS, "Applied")
}

// Promotion by SHA: prod takes only what staging applied; a new commit on
// the PR needs staging again.
func TestPromotionBySHA(t *testing.T) {
	s := newStack(t)
	first := s.openPR(1, "web")
	s.startBot()

	s.slash(alice, "plan prod pr-1")
	s.ephemeral(alice, first[:7]+" has not been applied in staging")

	s.slash(alice, "plan staging pr-1")
	s.applyWithTwoApprovals("staging · PR #1")

	s.slash(alice, "plan prod pr-1")
	s.applyWithTwoApprovals("prod · PR #1")
	if !s.appliedIn("prod", "web") {
		t.Fatal("not applied in prod")
	}

	second := s.openPR(1, "web", "cache") // a new commit
	s.slash(alice, "plan prod pr-1")
	s.ephemeral(alice, second[:7]+" has not been applied in staging")

	s.slash(bob, "status")
	status := s.ephemeral(bob, "applied: `"+first[:7]+"`")
	if strings.Count(status.Content(), "`"+first[:7]+"`") < 2 {
		t.Errorf("status does not show the commit applied in both environments:\n%s", status.Content())
	}
}

// Rollback: plan a commit of the default branch by SHA; it goes through the
// same approvals and undoes what the PR applied.
func TestRollbackBySHA(t *testing.T) {
	s := newStack(t)
	s.openPR(1, "web")
	s.startBot()

	s.slash(alice, "plan staging pr-1")
	s.applyWithTwoApprovals("staging · PR #1")
	if !s.applied("web") {
		t.Fatal("PR not applied")
	}
	s.slash(alice, "plan staging sha-"+s.main)
	msg := s.visible("staging · commit " + s.main[:7])
	msg = s.waitTS(msg.TS, "Plan ready for review")
	if !strings.Contains(msg.Content(), "terraform_data.web   ⚠ DESTROY") {
		t.Fatalf("rollback plan does not destroy what the PR made:\n%s", msg.Content())
	}
	s.click(alice, msg, approve)
	s.ephemeral(alice, "cannot approve it")
	s.click(bob, msg, approve)
	s.click(carol, msg, approve)
	s.waitTS(msg.TS, "Applied")
	if s.applied("web") {
		t.Fatal("rollback did not remove the resource")
	}
	// prod requires staging: the rolled-back commit was applied there, so prod may take it.
	s.slash(alice, "plan prod sha-"+s.main)
	s.visible("prod · commit " + s.main[:7])
}
