package main

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twokey/twokey/audit"
	"github.com/twokey/twokey/bot/slacksim"
	"github.com/twokey/twokey/config"
	"github.com/twokey/twokey/devstack"
	"github.com/twokey/twokey/devstack/stacktest"
	"github.com/twokey/twokey/runner/ghsim"
)

// withVerify makes staging verify every apply with v, and returns the
// config's path.
func (s *stack) withVerify(v *config.Verify) string {
	s.t.Helper()
	cfg := s.baseConfig(filepath.Join(s.dir, "data"), stacktest.Tool(s.t, "terraform"))
	cfg.Projects[0].Environments[0].Verify = v
	return s.write("twokey-verify.yaml", cfg)
}

// openPRFiles opens pull request n with these files changed.
func (s *stack) openPRFiles(n int, files map[string]string) {
	s.t.Helper()
	ctx := context.Background()
	changed := map[string]*string{}
	for name, content := range files {
		changed[name] = devstack.Str(content)
	}
	sha, err := s.repo.Commit(ctx, fmt.Sprintf("pr-%d", n), s.main, fmt.Sprintf("PR %d", n), changed)
	if err != nil {
		s.t.Fatal(err)
	}
	if err := s.repo.PublishPull(ctx, n, sha); err != nil {
		s.t.Fatal(err)
	}
	s.gh.SetPull("acme/infra", ghsim.Pull{Number: n, HeadSHA: sha, HeadRef: fmt.Sprintf("pr-%d", n), Title: fmt.Sprintf("Change %d", n)})
	s.prs[n] = sha
}

// applyPR plans PR n in staging and has bob and carol approve it; it
// returns the plan message once applied.
func (s *stack) applyPR(n int) slacksim.Message {
	s.t.Helper()
	s.slash(alice, fmt.Sprintf("plan staging pr-%d", n))
	msg := s.planMessage(n, "Plan ready for review")
	s.click(bob, msg, approve)
	msg = s.planMessage(n, "1 more needed")
	s.click(carol, msg, approve)
	return s.planMessage(n, "Applied")
}

// verifications are the verification events in the record.
func (s *stack) verifications() []audit.Event {
	s.t.Helper()
	var out []audit.Event
	for _, e := range s.events() {
		if e.Type == audit.Verification {
			out = append(out, e)
		}
	}
	return out
}

// waitStatus waits for a commit status on sha whose description holds want.
func (s *stack) waitStatus(sha, context, state, want string) {
	s.t.Helper()
	for deadline := time.Now().Add(waitFor); ; time.Sleep(50 * time.Millisecond) {
		for _, st := range s.gh.Statuses("acme/infra") {
			if st.SHA == sha && st.Context == context && st.State == state && strings.Contains(st.Description, want) {
				return
			}
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("no status %s=%s saying %q: %+v", context, state, want, s.gh.Statuses("acme/infra"))
		}
	}
}

const stableTF = `terraform {
  backend "local" {}
}

resource "terraform_data" "web" {
  input = "stable"
}
`

// A stable config converges: after "Apply complete" the thread says
// verifying, then that verification passed; the plan message and the
// record say so, and the channel hears nothing more.
func TestVerifyConvergedPasses(t *testing.T) {
	s := newStack(t)
	s.config = s.withVerify(&config.Verify{Converged: true})
	s.openPRFiles(1, map[string]string{"terraform/main.tf": stableTF})
	stop := s.startBot()
	defer stop()

	msg := s.applyPR(1)
	s.thread(msg, "Apply complete")
	s.thread(msg, "Verifying")
	s.thread(msg, "Verification passed")
	s.planMessage(1, "verified")
	s.waitStatus(s.prs[1], "twokey/apply/staging", "success", "verified")
	for _, m := range s.slack.Messages() {
		if strings.Contains(strings.ToLower(m.Content()), "verification failed") {
			t.Errorf("a passing verification said it failed: %s", m.Content())
		}
	}
	ev := s.verifications()
	if len(ev) != 1 || ev[0].Detail["result"] != "passed" || ev[0].Detail["converged"] != "passed" || ev[0].PlanID == "" {
		t.Fatalf("verification events: %+v", ev)
	}
}

// A config that never converges (a timestamp replaced at every apply):
// verification fails, and says so in the thread, the plan message and the
// channel itself.
func TestVerifyNeverConverges(t *testing.T) {
	s := newStack(t)
	s.config = s.withVerify(&config.Verify{Converged: true})
	s.openPRFiles(1, map[string]string{"terraform/main.tf": `terraform {
  backend "local" {}
}

resource "terraform_data" "clock" {
  triggers_replace = timestamp()
}
`})
	stop := s.startBot()
	defer stop()

	msg := s.applyPR(1)
	s.thread(msg, "Apply complete")
	s.thread(msg, "Verifying")
	s.thread(msg, "Verification failed")
	s.thread(msg, "terraform_data.clock")
	plan := s.planMessage(1, "applied, verification failed")
	note := s.topLevel("was applied, verification failed", "PR #1", "staging", "1 to replace")
	t.Logf("the plan message:\n%s\nthe channel:\n%s", plan.Content(), note.Content())
	s.waitStatus(s.prs[1], "twokey/apply/staging", "failure", "applied; verification failed")
	ev := s.verifications()
	if len(ev) != 1 || ev[0].Detail["result"] != "failed" || ev[0].Detail["converged"] != "failed" {
		t.Fatalf("verification events: %+v", ev)
	}
}

// A smoke script that fails: its output is in the thread, redacted of the
// plan credential it was given, and it found none of twokey's own secrets.
func TestVerifySmokeFails(t *testing.T) {
	s := newStack(t)
	s.config = s.withVerify(&config.Verify{Converged: true, Smoke: "./scripts/smoke.sh"})
	s.openPRFiles(1, map[string]string{"terraform/main.tf": stableTF, "scripts/smoke.sh": `#!/bin/sh
echo "smoke: checking web in $TWOKEY_ENV"
if env | grep -q -e SLACK -e GITHUB_TOKEN -e TWOKEY_PLAN_KEY; then echo "smoke: FOUND A TWOKEY SECRET"; fi
echo "smoke: vault=$VAULT_TOKEN"
echo "smoke: health check failed: 503" >&2
exit 1
`})
	stop := s.startBot()
	defer stop()

	msg := s.applyPR(1)
	s.thread(msg, "Apply complete")
	s.thread(msg, "Verifying")
	failed := s.thread(msg, "Verification failed")
	t.Logf("the thread says:\n%s", failed.Content())
	for _, want := range []string{"smoke", "health check failed: 503", "checking web in staging", "vault=[redacted]"} {
		if !strings.Contains(failed.Content(), want) {
			t.Errorf("the failure does not say %q:\n%s", want, failed.Content())
		}
	}
	if strings.Contains(failed.Content(), "FOUND A TWOKEY SECRET") || strings.Contains(failed.Content(), "hvs.") {
		t.Errorf("the smoke script saw a secret:\n%s", failed.Content())
	}
	s.planMessage(1, "applied, verification failed")
	s.topLevel("was applied, verification failed", "PR #1", "smoke: exit status 1")
	for _, m := range s.slack.Messages() {
		for _, secret := range []string{s.slack.Options().BotToken, s.slack.Options().AppToken, githubToken, s.botToken} {
			if strings.Contains(m.Content(), secret) {
				t.Errorf("a message carries a secret of twokey's:\n%s", m.Content())
			}
		}
	}
	ev := s.verifications()
	if len(ev) != 1 || ev[0].Detail["result"] != "failed" || ev[0].Detail["converged"] != "passed" || ev[0].Detail["smoke"] != "failed" {
		t.Fatalf("verification events: %+v", ev)
	}
}

// A smoke script that outlives its timeout is killed, and reported so.
func TestVerifySmokeTimeout(t *testing.T) {
	s := newStack(t)
	s.config = s.withVerify(&config.Verify{Smoke: "scripts/slow.sh", Timeout: config.Duration(2e9)})
	s.openPRFiles(1, map[string]string{"terraform/main.tf": stableTF, "scripts/slow.sh": `#!/bin/sh
echo "slow: started"
sleep 600
echo "slow: SHOULD NEVER PRINT"
`})
	stop := s.startBot()
	defer stop()

	msg := s.applyPR(1)
	s.thread(msg, "Verifying")
	failed := s.thread(msg, "Verification failed")
	for _, want := range []string{"timed out after 2s", "slow: started"} {
		if !strings.Contains(failed.Content(), want) {
			t.Errorf("the failure does not say %q:\n%s", want, failed.Content())
		}
	}
	if strings.Contains(failed.Content(), "SHOULD NEVER PRINT") {
		t.Errorf("the smoke script ran on:\n%s", failed.Content())
	}
	s.planMessage(1, "applied, verification failed")
	ev := s.verifications()
	if len(ev) != 1 || ev[0].Detail["smoke"] != "timed out" {
		t.Fatalf("verification events: %+v", ev)
	}
}
