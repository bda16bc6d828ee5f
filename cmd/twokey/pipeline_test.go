package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/twokey/twokey/config"
	"github.com/twokey/twokey/devstack"
	"github.com/twokey/twokey/devstack/stacktest"
	"github.com/twokey/twokey/runner/ghsim"
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

// Two projects with their own Vault roles: an apply of one never sees the
// other's secrets, and commands name the project when both have staging.
func TestProjectsKeepTheirSecrets(t *testing.T) {
	s := newStack(t)
	ctx := context.Background()
	const netSecret = "network-only-secret-value"
	if err := s.vault.Apply(ctx, devstack.VaultSetup{
		Policies: map[string]string{"network-staging-apply": `
path "secret/data/network/*" { capabilities = ["read"] }
path "auth/token/lookup-self" { capabilities = ["read"] }`},
		TokenRoles: map[string]devstack.TokenRole{"twokey-network-staging-apply": {AllowedPolicies: []string{"network-staging-apply"}, Orphan: true}},
		KV:         map[string]map[string]any{"network/staging": {"password": netSecret}},
	}); err != nil {
		t.Fatal(err)
	}
	netRepo, err := devstack.NewGitRepo(ctx, filepath.Join(s.dir, "network-git"))
	if err != nil {
		t.Fatal(err)
	}
	netDump := filepath.Join(s.out, "network-env.txt")
	base, err := netRepo.Commit(ctx, "main", "", "init", map[string]*string{"main.tf": devstack.Str("terraform {\n  backend \"local\" {}\n}\n")})
	if err != nil {
		t.Fatal(err)
	}
	netSHA, err := netRepo.Commit(ctx, "vpc", base, "vpc", map[string]*string{"main.tf": devstack.Str(fmt.Sprintf(
		"terraform {\n  backend \"local\" {}\n}\nresource \"terraform_data\" \"vpc\" {\n  provisioner \"local-exec\" {\n    command = \"env > %s\"\n  }\n}\n", netDump))})
	if err != nil {
		t.Fatal(err)
	}
	if err := netRepo.PublishPull(ctx, 1, netSHA); err != nil {
		t.Fatal(err)
	}
	s.gh.AddRepo("acme/network", netRepo.CloneURL())
	s.gh.SetPull("acme/network", ghsim.Pull{Number: 1, HeadSHA: netSHA, Title: "VPC"})

	cfg := s.baseConfig(filepath.Join(s.dir, "data"), stacktest.Tool(t, "terraform"))
	staging := cfg.Projects[0].Environments[0]
	staging.BackendConfig = map[string]string{"path": filepath.Join(s.out, "network.tfstate")}
	staging.Vault = config.EnvVault{Apply: config.Credential{Role: "twokey-network-staging-apply", TTL: staging.Vault.Apply.TTL,
		Secrets: []config.VaultSecret{{Path: "secret/data/network/staging", Env: map[string]string{"NET_PASSWORD": "password"}}}}}
	cfg.Projects = append(cfg.Projects, config.Project{Name: "network", Repo: "acme/network", Environments: []config.Environment{staging}})
	s.config = s.write("two-projects.yaml", cfg)
	s.openPR(1, "web")
	s.startBot()

	s.slash(alice, "plan staging pr-1")
	s.ephemeral(alice, "name the project")
	s.slash(alice, "plan infra staging pr-1")
	s.applyWithTwoApprovals("infra/staging · PR #1")
	s.slash(alice, "plan network staging pr-1")
	s.applyWithTwoApprovals("network/staging · PR #1")

	infraEnv, err := os.ReadFile(s.envDump())
	if err != nil {
		t.Fatal(err)
	}
	netEnv, err := os.ReadFile(netDump)
	if err != nil {
		t.Fatal(err)
	}
	if envValue(string(infraEnv), "DB_PASSWORD") != kvPassword || envValue(string(netEnv), "NET_PASSWORD") != netSecret {
		t.Fatal("an apply did not get its own project's secret")
	}
	if strings.Contains(string(infraEnv), netSecret) || strings.Contains(string(netEnv), kvPassword) {
		t.Fatal("an apply saw the other project's secret")
	}
}
