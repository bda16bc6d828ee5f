package main

import (
	"os"
	"strings"
	"testing"

	"github.com/twokey/twokey/config"
	"github.com/twokey/twokey/devstack/stacktest"
)

// pinProject pins the stack's project to its own binary and version, as
// projects[].terraform does, and rewrites the config serve reads.
func (s *stack) pinProject(path, version string) {
	s.t.Helper()
	cfg := s.baseConfig(s.dir+"/data", stacktest.Tool(s.t, "terraform"))
	cfg.Projects[0].Terraform = &config.Terraform{Path: path, Version: version}
	s.config = s.write("twokey.yaml", cfg)
}

// A project pinned to OpenTofu goes through the whole flow with tofu: plan,
// two approvals, applied; the state file says tofu wrote it.
func TestOpenTofuEndToEnd(t *testing.T) {
	s := newStack(t)
	s.pinProject(stacktest.Tool(t, "tofu"), "1.12.6")
	s.openPR(1, "web")
	s.startBot()

	s.slash(alice, "plan staging pr-1")
	msg := s.planMessage(1, "Plan ready for review")
	if !strings.Contains(msg.Content(), "terraform_data.web") {
		t.Fatalf("the plan does not show the resource:\n%s", msg.Content())
	}
	s.click(bob, msg, approve)
	s.planMessage(1, "1 more needed")
	s.click(carol, msg, approve)
	s.waitTS(msg.TS, "Applied")
	if !s.applied("web") {
		t.Fatal("web is not in the state")
	}
	state, err := os.ReadFile(s.statePath())
	if err != nil {
		t.Fatal(err)
	}
	// Terraform writes "terraform_version": "1.12.2"; tofu its own version.
	if !strings.Contains(string(state), `"terraform_version": "1.12.6"`) {
		t.Fatalf("the state was not written by tofu 1.12.6:\n%s", state)
	}
	if env, err := os.ReadFile(s.envDump()); err != nil || !strings.Contains(string(env), "DB_PASSWORD="+kvPassword) {
		t.Fatalf("tofu's apply did not run with the apply credential: %v", err)
	}
}

// A per-project pin whose version is not what the binary reports is
// refused: no plan is made, and the user is told why.
func TestProjectBinaryPinMismatchRefused(t *testing.T) {
	s := newStack(t)
	s.pinProject(stacktest.Tool(t, "tofu"), "1.12.2") // tofu reports 1.12.6
	s.openPR(1, "web")
	s.startBot()

	s.slash(alice, "plan staging pr-1")
	s.ephemeral(alice, "reports 1.12.6, config pins 1.12.2")
	for _, m := range s.slack.Messages() {
		if strings.Contains(m.Content(), "Plan ready for review") {
			t.Fatalf("a plan was made with the wrong binary:\n%s", m.Content())
		}
	}
}
