package main

import (
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/twokey/twokey/audit"
	"github.com/twokey/twokey/runner/ghsim"
)

const (
	approve = "twokey_approve"
	reject  = "twokey_reject"
)

// (a) plan → approve → approve → applied, with the minted credential and
// nothing else of the bot's in terraform's environment.
func TestPlanApproveApply(t *testing.T) {
	s := newStack(t)
	s.openPR(1, "web")
	s.startBot()

	s.slash(alice, "plan staging pr-1")
	msg := s.planMessage(1, "Plan ready for review")
	content := msg.Content()
	for _, want := range []string{"terraform_data.web", "To add", "<@" + alice + ">", s.prs[1][:7]} {
		if !strings.Contains(content, want) {
			t.Errorf("plan message lacks %q:\n%s", want, content)
		}
	}
	if b := msg.Buttons(); len(b) != 2 || b[0].ActionID != approve || b[1].ActionID != reject {
		t.Fatalf("buttons = %+v", b)
	}

	s.click(bob, msg, approve)
	msg = s.planMessage(1, "1 more needed")
	if s.applied("web") {
		t.Fatal("applied after one approval")
	}
	s.click(carol, msg, approve)
	done := s.planMessage(1, "Applied")
	if len(done.Buttons()) != 0 {
		t.Error("applied message still has buttons")
	}
	s.thread(done, "Apply complete: 1 added, 0 changed, 0 destroyed")
	if !s.applied("web") {
		t.Fatal("resource not in state after apply")
	}

	env, err := os.ReadFile(s.envDump())
	if err != nil {
		t.Fatal(err)
	}
	childToken := envValue(string(env), "VAULT_TOKEN")
	if envValue(string(env), "DB_PASSWORD") != kvPassword {
		t.Error("terraform did not get the mapped Vault secret")
	}
	if childToken == "" || childToken == s.botToken {
		t.Error("terraform did not get a child token of its own")
	}
	for _, leaked := range []string{s.botToken, githubToken, s.slack.Options().BotToken, s.slack.Options().AppToken} {
		if strings.Contains(string(env), leaked) {
			t.Errorf("terraform's environment contains a bot credential")
		}
	}
	root, err := s.vault.Client()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := root.Auth().Token().Lookup(childToken); err == nil {
		t.Error("the child token still exists after the apply")
	}
	// No secret reached Slack.
	for _, c := range s.slack.Calls() {
		for _, v := range c.Params {
			if strings.Contains(v, kvPassword) || strings.Contains(v, childToken) || strings.Contains(v, s.botToken) {
				t.Fatalf("secret sent to Slack in %s", c.Method)
			}
		}
	}
}

// The plan message shows terraform's own account of the plan, with its
// buttons, as soon as terraform plan ends; the plan read back from its
// saved bytes replaces it.
func TestPlanPreviewComesFirst(t *testing.T) {
	s := newStack(t)
	s.openPR(1, "web", "db")
	s.startBot()

	s.slash(alice, "plan staging pr-1")
	msg := s.planMessage(1, "Plan ready for review")
	var order []string
	for _, c := range s.slack.Calls() {
		if c.Method != "chat.update" || c.Params["ts"] != msg.TS || c.Error != "" {
			continue
		}
		switch blocks := c.Params["blocks"]; {
		case strings.Contains(blocks, "Planned, checking"):
			order = append(order, "preview")
			for _, want := range []string{approve, reject, "terraform_data.web", "terraform_data.db", "reading the saved plan back"} {
				if !strings.Contains(blocks, want) {
					t.Errorf("the preview lacks %q: %s", want, blocks)
				}
			}
		case strings.Contains(blocks, "Plan ready for review"):
			order = append(order, "ready")
		}
	}
	if len(order) < 2 || order[0] != "preview" || order[len(order)-1] != "ready" || slices.Index(order, "ready") < slices.Index(order, "preview") {
		t.Fatalf("the message's updates: %q, want the preview, then the plan ready for review", order)
	}
}

// (b) the requester cannot approve their own plan.
func TestSelfApprovalRefused(t *testing.T) {
	s := newStack(t)
	s.openPR(1, "web")
	s.slack.SetGroup(group, alice, bob, carol) // alice is an approver too
	stop := s.startBot()

	s.slash(alice, "plan staging pr-1")
	msg := s.planMessage(1, "Plan ready for review")
	planID := msg.Buttons()[0].Value
	s.click(alice, msg, approve)
	s.ephemeral(alice, "cannot approve it")
	s.click(bob, msg, approve)
	s.planMessage(1, "1 more needed")
	// Stopping the bot joins every handler it started: had bob's approval
	// made a quorum with alice's, its apply would have been recorded by now.
	stop()
	if s.applied("web") || s.countEvents(planID, audit.ApplyStarted) != 0 {
		t.Fatal("applied with the requester's approval")
	}
}

// (c) the same person approving twice counts once.
func TestDoubleApprovalCountsOnce(t *testing.T) {
	s := newStack(t)
	s.openPR(1, "web")
	s.startBot()

	s.slash(alice, "plan staging pr-1")
	msg := s.planMessage(1, "Plan ready for review")
	planID := msg.Buttons()[0].Value
	s.click(bob, msg, approve)
	s.planMessage(1, "1 more needed")
	s.click(bob, msg, approve)
	// The second click is handled as the duplicate it is, which ends it.
	s.waitLog(1, "duplicate delivery ignored", "key=click:"+planID+":approve:"+bob+":")
	if m := s.planMessage(1, "1 more needed"); strings.Count(m.Content(), "<@"+bob+">") != 1 {
		t.Fatalf("bob counted twice:\n%s", m.Content())
	}
	if s.applied("web") || s.countEvents(planID, audit.ApplyStarted) != 0 {
		t.Fatal("one person's two clicks applied the plan")
	}
	s.click(erin, msg, approve) // an approver listed by user ID
	done := s.planMessage(1, "Applied")
	if !strings.Contains(done.Content(), "Approved by <@"+bob+">, <@"+erin+">.") {
		t.Fatalf("applied without erin's approval, or with bob's twice:\n%s", done.Content())
	}
	if n := s.countEvents(planID, audit.ApplyStarted); n != 1 {
		t.Fatalf("%d %s events, want 1", n, audit.ApplyStarted)
	}
}

// (d) someone who is not an approver is refused.
func TestUnauthorizedRefused(t *testing.T) {
	s := newStack(t)
	s.openPR(1, "web")
	s.startBot()

	s.slash(alice, "plan staging pr-1")
	msg := s.planMessage(1, "Plan ready for review")
	s.click(dave, msg, approve)
	s.ephemeral(dave, "not an approver")
	s.click(mallory, msg, approve) // another workspace
	s.ephemeral(mallory, "does not serve this Slack workspace")
	s.click(bob, msg, approve)
	s.planMessage(1, "1 more needed")
	if s.applied("web") {
		t.Fatal("applied")
	}
}

// (e) one pending change per environment; (f) reject frees it.
func TestLockBusyThenRejectFrees(t *testing.T) {
	s := newStack(t)
	s.openPR(1, "web")
	s.openPR(2, "db")
	s.startBot()

	s.slash(alice, "plan staging pr-1")
	msg := s.planMessage(1, "Plan ready for review")
	s.slash(bob, "plan staging pr-2")
	refusal := s.ephemeral(bob, "is locked by <@"+alice+"> for PR #1 since")
	if !strings.Contains(refusal.Content(), "ago") {
		t.Errorf("refusal does not say how long: %s", refusal.Content())
	}

	s.click(dave, msg, reject)
	s.ephemeral(dave, "not an approver")
	s.click(carol, msg, reject)
	rejected := s.planMessage(1, "Rejected by <@"+carol+">")
	if len(rejected.Buttons()) != 0 {
		t.Error("rejected plan still has buttons")
	}
	s.slash(bob, "plan staging pr-2")
	s.planMessage(2, "Plan ready for review")
}

// (g) Vault down at the last approval: nothing applied, the plan stays pending.
func TestVaultDownKeepsPlanPending(t *testing.T) {
	s := newStack(t)
	s.openPR(1, "web")
	s.startBot()

	s.slash(alice, "plan staging pr-1")
	msg := s.planMessage(1, "Plan ready for review")
	s.click(bob, msg, approve)
	s.planMessage(1, "1 more needed")
	if err := s.vault.Stop(); err != nil {
		t.Fatal(err)
	}
	s.click(carol, msg, approve)
	s.ephemeral(carol, "Vault is unavailable")
	s.thread(msg, "nothing was applied")
	pending := s.planMessage(1, "Plan ready for review")
	if len(pending.Buttons()) != 2 || !strings.Contains(pending.Content(), "Approved by <@"+bob+">, <@"+carol+">") {
		t.Fatalf("plan did not stay pending with its approvals:\n%s", pending.Content())
	}
	if s.applied("web") {
		t.Fatal("applied without Vault")
	}
	s.slash(bob, "status staging")
	s.ephemeral(bob, "waiting for approvals, 2 of 2 approvals")
}

// (h) the bot restarts between the two approvals; the second still applies.
func TestRestartBetweenApprovals(t *testing.T) {
	s := newStack(t)
	s.openPR(1, "web")
	stop := s.startBot()

	s.slash(alice, "plan staging pr-1")
	msg := s.planMessage(1, "Plan ready for review")
	s.click(bob, msg, approve)
	s.planMessage(1, "1 more needed")
	stop()

	s.startBot()
	s.click(carol, msg, approve)
	s.planMessage(1, "Applied")
	if !s.applied("web") {
		t.Fatal("not applied after restart")
	}
}

// Bad input gets a clear message, to that user only.
func TestBadInput(t *testing.T) {
	s := newStack(t)
	s.openPR(1, "web")
	s.gh.SetPull("acme/infra", ghPull(9, s.prs[1], "closed"))
	s.startBot()

	for _, tt := range []struct{ text, want string }{
		{"plan qa pr-1", `unknown environment "qa"`},
		{"plan staging 42", "is not a revision"},
		{"plan staging sha-" + strings.Repeat("0", 40), "no such commit or tag"},
		{"plan staging ref-v9.9.9", "no such commit or tag"},
		{"plan staging sha-" + s.prs[1], "not on the default branch"},
		{"deploy staging", "unknown command"},
		{"plan staging pr-404", "pull request not found"},
		{"plan staging pr-9", "is closed"},
		{"help", "/tf plan"},
	} {
		s.slash(dave, tt.text)
		s.ephemeral(dave, tt.want)
	}
	if _, err := s.slack.SlashCommand(alice, "COTHER", "plan staging pr-1"); err != nil {
		t.Fatal(err)
	}
	s.ephemeral(alice, "takes commands only in <#"+channel+">")
	for _, m := range s.slack.Messages() {
		if !m.Ephemeral {
			t.Fatalf("bad input produced a channel message: %s", m.Content())
		}
	}
}

// SIGTERM during an apply: twokey waits out its grace, then interrupts
// terraform (SIGINT), which stops and saves state; the plan is marked
// interrupted and never retried.
func TestShutdownInterruptsApplyGracefully(t *testing.T) {
	s := newStack(t)
	s.provision = " && sleep 60"
	s.openPR(1, "slow")
	stop := s.startBot("--shutdown-grace=1s")

	s.slash(alice, "plan staging pr-1")
	msg := s.planMessage(1, "Plan ready for review")
	s.click(bob, msg, approve)
	s.click(carol, msg, approve)
	for deadline := time.Now().Add(waitFor); ; time.Sleep(20 * time.Millisecond) {
		if _, err := os.Stat(s.envDump()); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("apply never started")
		}
	}
	start := time.Now()
	stop()
	t.Logf("serve stopped %v after SIGTERM", time.Since(start).Round(time.Millisecond))
	interrupted := s.planMessage(1, "Interrupted")
	if len(interrupted.Buttons()) != 0 {
		t.Error("an interrupted plan still offers Approve")
	}
	state, err := os.ReadFile(s.statePath())
	if err != nil || !strings.Contains(string(state), `"status": "tainted"`) {
		t.Fatalf("terraform did not stop gracefully and save state (tainted resource expected): %v\n%s", err, state)
	}
}

// A terraform error reaches the requester; the channel message says the
// plan failed, and the environment is free again.
func TestTerraformErrorReported(t *testing.T) {
	s := newStack(t)
	s.openPRWith(3, `resource "terraform_data" "x" { input = var.undeclared }`)
	s.openPR(4, "web")
	s.startBot()

	s.slash(alice, "plan staging pr-3")
	s.planMessage(3, "Plan failed")
	s.ephemeral(alice, "terraform plan failed")
	s.ephemeral(alice, "undeclared")
	s.slash(alice, "plan staging pr-4")
	s.planMessage(4, "Plan ready for review")
}

func envValue(env, key string) string {
	for _, line := range strings.Split(env, "\n") {
		if v, ok := strings.CutPrefix(line, key+"="); ok {
			return v
		}
	}
	return ""
}

func ghPull(n int, sha, state string) ghsim.Pull {
	return ghsim.Pull{Number: n, HeadSHA: sha, State: state, Title: "closed change"}
}
