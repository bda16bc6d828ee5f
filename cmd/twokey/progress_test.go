package main

import (
	"strings"
	"testing"
)

// An apply that runs for seconds shows its progress in one message of the
// thread, edited as lines arrive, instead of a post every 2 s.
func TestApplyProgressOneMessage(t *testing.T) {
	s := newStack(t)
	// fast is done at once, slow five seconds later: two progress lines,
	// more than ProgressEvery (2 s) apart.
	s.openPRWith(1, `terraform {
  backend "local" {}
}
resource "terraform_data" "fast" {
  input = "pr-1"
}
resource "terraform_data" "slow" {
  input = "pr-1"
  provisioner "local-exec" {
    command = "sleep 5"
  }
}
`)
	stop := s.startBot()
	defer stop()

	s.slash(alice, "plan staging pr-1")
	msg := s.planMessage(1, "Plan ready for review")
	s.click(bob, msg, approve)
	msg = s.planMessage(1, "1 more needed")
	s.click(carol, msg, approve)
	done := s.planMessage(1, "Applied")
	s.thread(done, "Apply complete: 2 added")

	var progress []string
	edits := 0
	for _, m := range s.slack.Messages() {
		if m.ThreadTS == done.TS && strings.HasPrefix(m.Text, "```") {
			progress = append(progress, m.Text)
			edits += m.Edits
		}
	}
	if len(progress) != 1 {
		t.Fatalf("%d progress messages in the thread, want 1:\n%s", len(progress), strings.Join(progress, "\n---\n"))
	}
	if edits < 1 || !strings.Contains(progress[0], "terraform_data.fast: create complete") ||
		!strings.Contains(progress[0], "terraform_data.slow: create complete") {
		t.Errorf("the progress message (edited %d times) does not show the whole apply:\n%s", edits, progress[0])
	}
	t.Logf("one progress message, edited %d times", edits)
}
