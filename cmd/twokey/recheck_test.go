package main

import "testing"

// An approver removed from the approver group after clicking no longer
// counts: the second approval arrives while Slack's answer about the group
// is still cached, yet right before the apply every counted approver's
// membership is read fresh, the removed one's approval is withdrawn, and
// nothing is applied until someone else approves in their place.
func TestApproverRemovedBeforeApply(t *testing.T) {
	s := newStack(t)
	s.slack.SetGroup(group, bob, carol, dave)
	s.openPR(7, "web")
	s.startBot()

	s.slash(alice, "plan staging pr-7")
	msg := s.planMessage(7, "Plan ready for review")
	s.click(bob, msg, approve)
	msg = s.planMessage(7, "Approved by <@"+bob+"> — 1 more needed")

	s.slack.SetGroup(group, carol, dave) // bob leaves the team
	s.click(carol, msg, approve)
	s.thread(msg, "<@"+bob+"> may no longer approve in staging")
	msg = s.planMessage(7, "Approved by <@"+carol+"> — 1 more needed")
	if s.applied("web") {
		t.Fatal("applied with the approval of someone removed from the approvers")
	}

	s.click(dave, msg, approve)
	s.planMessage(7, "Applied")
	if !s.applied("web") {
		t.Fatal("not applied after a replacement approval")
	}
}
