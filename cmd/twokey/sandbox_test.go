package main

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/twokey/twokey/config"
	"github.com/twokey/twokey/devstack/stacktest"
	"github.com/twokey/twokey/runner/ghsim"
)

// check-config says how runs are confined, and checks that they can be
// here; an unsandboxed config gets a warning there and on every plan.
func TestSandboxModeIsVisible(t *testing.T) {
	s := newStack(t)
	var out bytes.Buffer
	if code := Main(context.Background(), []string{"check-config", "--config", s.config}, &out, &out, s.env); code != 0 ||
		!strings.Contains(out.String(), "sandbox: bubblewrap") || strings.Contains(out.String(), "WARNING") {
		t.Fatalf("check-config: %d\n%s", code, out.String())
	}

	cfg := s.baseConfig(filepath.Join(s.dir, "data"), stacktest.Tool(t, "terraform"))
	cfg.Runner.Sandbox.Mode = config.SandboxNone
	s.config = s.write("unsandboxed.yaml", cfg)
	out.Reset()
	if code := Main(context.Background(), []string{"check-config", "--config", s.config}, &out, &out, s.env); code != 0 ||
		!strings.Contains(out.String(), "sandbox: none: UNSANDBOXED") || !strings.Contains(out.String(), "WARNING: runner.sandbox.mode is none") {
		t.Fatalf("check-config of an unsandboxed config: %d\n%s", code, out.String())
	}
	s.openPR(1, "web")
	s.startBot()
	s.slash(alice, "plan staging pr-1")
	s.planMessage(1, "*unsandboxed*")
}

// runner.sandbox: auto fails closed: where bubblewrap cannot start a
// sandbox, serve with an embedded runner does not start, and says why.
func TestSandboxAutoFailsClosed(t *testing.T) {
	s := newStack(t)
	t.Setenv("PATH", t.TempDir()) // no bwrap
	var out bytes.Buffer
	code := Main(context.Background(), []string{"serve", "--config", s.config}, &out, &out, s.env)
	if code == 0 || !strings.Contains(out.String(), "bubblewrap not found") ||
		!strings.Contains(out.String(), "unless runner.sandbox.mode is none") {
		t.Fatalf("serve without bubblewrap: exit %d\n%s", code, out.String())
	}
	out.Reset()
	if code := Main(context.Background(), []string{"check-config", "--config", s.config}, &out, &out, s.env); code == 0 ||
		!strings.Contains(out.String(), "bubblewrap not found") {
		t.Fatalf("check-config without bubblewrap: exit %d\n%s", code, out.String())
	}
}

// A pull request from a fork is not planned unless the project allows it:
// anyone who can fork the repository could otherwise run code at plan time.
func TestForkPRsRefusedByDefault(t *testing.T) {
	s := newStack(t)
	sha := s.openPR(1, "web")
	s.gh.SetPull("acme/infra", ghsim.Pull{Number: 1, HeadSHA: sha, HeadRef: "patch-1", Title: "Change 1", HeadRepo: "mallory/infra"})
	stop := s.startBot()
	s.slash(alice, "plan staging pr-1")
	s.planMessage(1, "pull requests from forks are not planned here")
	if s.applied("web") {
		t.Fatal("applied")
	}
	stop()

	cfg := s.baseConfig(filepath.Join(s.dir, "data"), stacktest.Tool(t, "terraform"))
	cfg.Projects[0].AllowForkPRs = true
	s.config = s.write("forks.yaml", cfg)
	s.startBot()
	s.slash(alice, "plan staging pr-1")
	s.planMessage(1, "Plan ready for review")
}
