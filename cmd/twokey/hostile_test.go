package main

import (
	"context"
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	vault "github.com/hashicorp/vault/api"

	"github.com/twokey/twokey/bot/slacksim"
	"github.com/twokey/twokey/config"
	"github.com/twokey/twokey/devstack"
	"github.com/twokey/twokey/devstack/stacktest"
	"github.com/twokey/twokey/runner/ghsim"
)

// lootAddress is devstack/lootprovider's source address.
const lootAddress = "example.com/twokey/loot"

// lootProvider is stacktest.LootProvider, as a string for a commit.
func lootProvider(t testing.TB) string { return string(stacktest.LootProvider(t)) }

// hostileRun is what the pull request's code does at plan time, knowing
// every path twokey uses: it looks at every process, reads every file it
// can name, tries Redis and writes, leaves processes behind, and prints all
// it found into the plan (so toward Slack) and into a file in the state
// directory, which the test reads.
const hostileRun = `
L=%[1]s/loot.txt
{
  echo "== me"; id; env
  for p in /proc/[0-9]*; do
    echo "== $p"; tr '\0' '\n' < $p/environ; tr '\0' ' ' < $p/cmdline; echo
    head -c 65536 $p/mem | tr -c '[:print:]' '\n' | grep -E '.{12,}' | head -50
  done
  echo "== files"
  for f in %[2]s %[3]s %[4]s/.vault-token /root/.vault-token %[5]s/* %[6]s/*; do echo "-- $f"; cat "$f"; done
  find %[5]s -type f 2>&1 | head -200
  find %[5]s -type f -exec cat {} + 2>/dev/null | tr -c '[:print:]' '\n' | grep -E '.{12,}' | head -2000
  echo "== redis"; redis-cli -h 127.0.0.1 -p %[7]s --no-auth-warning KEYS '*' 2>&1 | head -50
  echo "== writes"
  for d in %[5]s %[5]s/mirrors %[5]s/runs %[5]s/runs/*; do touch "$d/hostile-was-here" && echo "wrote into $d"; done
} > $L 2>&1
setsid sh -c 'exec 9>>%[1]s/survivor; sleep 600' </dev/null >/dev/null 2>&1 &
( ( exec 9>>%[1]s/survivor; sleep 600 ) </dev/null >/dev/null 2>&1 & ) &
cat $L
`

// hostilePR opens pull request n: a config whose data source, from a
// provider the PR itself ships, runs hostileRun at plan time.
func (s *stack) hostilePR(n int, program string) {
	s.t.Helper()
	ctx := context.Background()
	tf := fmt.Sprintf(`terraform {
  backend "local" {}
  required_providers {
    loot = { source = %q, version = "1.0.0" }
  }
}
data "loot_run" "x" {
  program = <<-EOT
%s
  EOT
}
output "found" {
  value = data.loot_run.x.output
}
resource "terraform_data" "hostile" {
  input = "pr-%d"
}
`, lootAddress, program, n)
	plugin := "terraform/terraform.d/plugins/" + lootAddress + "/1.0.0/linux_amd64/terraform-provider-loot_v1.0.0"
	sha, err := s.repo.Commit(ctx, fmt.Sprintf("pr-%d", n), s.main, "harmless-looking change",
		map[string]*string{"terraform/main.tf": devstack.Str(tf), plugin: devstack.Str(lootProvider(s.t))})
	if err != nil {
		s.t.Fatal(err)
	}
	if err := s.repo.PublishPull(ctx, n, sha); err != nil {
		s.t.Fatal(err)
	}
	s.gh.SetPull("acme/infra", ghsim.Pull{Number: n, HeadSHA: sha, HeadRef: fmt.Sprintf("pr-%d", n), Title: "harmless-looking change"})
	s.prs[n] = sha
}

// The attack, end to end: a pull request whose provider runs code
// at plan time, against `twokey serve` run as the README says (its own OS
// process, secrets in its environment and in files). Nothing it finds is a
// secret, nothing it sends reaches Slack, GitHub or a log with a secret in
// it, nothing it finds mints a token on an apply or break-glass role, no
// process of it outlives the plan, and a later legitimate apply is
// unaffected.
func TestHostilePullRequest(t *testing.T) {
	s := newStack(t, func(sc *stackConfig) { sc.acl = true }) // Redis with ACL users and passwords, as in production
	secrets := map[string]string{}
	plant := func(name, value string) string { secrets[name] = value; return value }

	// Secrets in files: the config, a Vault token in HOME, a file in
	// data_dir, serve's signing key.
	home := filepath.Join(s.dir, "home")
	if err := os.MkdirAll(home, 0o700); err != nil {
		t.Fatal(err)
	}
	vaultFile := plant("~/.vault-token", "hvs.HOMEFILE"+strings.Repeat("h", 20))
	if err := os.WriteFile(filepath.Join(home, ".vault-token"), []byte(vaultFile), 0o600); err != nil {
		t.Fatal(err)
	}
	data := filepath.Join(s.dir, "data")
	if err := os.MkdirAll(data, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(data, "planted.txt"), []byte(plant("data_dir file", "in-data-dir-8d1e0f3a9b")), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := s.baseConfig(data, stacktest.Tool(t, "terraform"))
	cfg.Projects[0].Providers = []string{lootAddress}
	cfg.Projects[0].AllowPRProviders = true       // the sandbox, not the provider rule, is what is tested here
	cfg.Projects[0].Environments[1].Requires = "" // so prod can hold a pending plan of its own
	cfg.Audit.File = filepath.Join(s.dir, "audit.jsonl")
	configPath := s.write("hostile.yaml", cfg)
	f, err := os.OpenFile(configPath, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(f, "# %s\n", plant("config file", "config-marker-51c2a7e0d4"))
	f.Close()
	if key, err := os.ReadFile(filepath.Join(s.keys, "serve.key")); err == nil {
		plant("signing key", strings.TrimSpace(string(key)))
	}

	// Secrets in serve's environment: every one it reads, and more.
	env := map[string]string{"HOME": home}
	for _, k := range []string{"SLACK_BOT_TOKEN", "SLACK_APP_TOKEN", "VAULT_TOKEN", "GITHUB_TOKEN", "TWOKEY_PLAN_KEY", "TWOKEY_REDIS_PASSWORD"} {
		env[k] = plant(k, s.env(k))
	}
	if key, err := base64.StdEncoding.DecodeString(env["TWOKEY_PLAN_KEY"]); err == nil {
		plant("plan key (decoded)", string(key))
	}
	for i := range 12 {
		k := fmt.Sprintf("TWOKEY_OPERATOR_SECRET_%d", i)
		env[k] = plant(k, fmt.Sprintf("op-secret-%d-%x", i, time.Now().UnixNano()))
	}
	plant("Vault KV staging password", kvPassword)

	// Another environment's pending plan, with a secret in it.
	prodSecret := plant("prod plan", "prod-plan-secret-3f9a7c")
	s.openPRWith(2, fmt.Sprintf("terraform {\n  backend \"local\" {}\n}\nresource \"terraform_data\" \"db\" {\n  input = %q\n}\n", prodSecret))
	s.openPR(1, "web") // the legitimate change, applied after the attack
	s.hostilePR(3, fmt.Sprintf(hostileRun, s.out, configPath, cfg.Audit.File, home, data, s.keys,
		strings.TrimPrefix(s.redis.Addr[strings.LastIndex(s.redis.Addr, ":"):], ":")))
	if len(secrets) < 20 {
		t.Fatalf("only %d secrets planted", len(secrets))
	}

	before := s.slack.Connections()
	s.startProcess([]string{"serve", "--config", configPath}, env)
	if err := s.slack.WaitConnected(before+1, 30*time.Second); err != nil {
		t.Fatalf("serve did not connect: %v\nlogs:\n%s", err, s.logs.String())
	}
	s.slash(alice, "plan prod pr-2")
	s.planMessage(2, "Plan ready for review")
	s.slash(alice, "plan staging pr-3")
	msg := s.planMessage(3, "Plan ready for review")

	s.checkLoot(secrets, data)

	// A later legitimate apply is unaffected.
	s.click(bob, msg, reject)
	s.planMessage(3, "Rejected")
	s.slash(alice, "plan staging pr-1")
	s.applyWithTwoApprovals("staging · PR #1")
	if !s.applied("web") {
		t.Fatal("the legitimate change was not applied after the attack")
	}
	env2, err := os.ReadFile(s.envDump())
	if err != nil || envValue(string(env2), "DB_PASSWORD") != kvPassword {
		t.Fatalf("the legitimate apply did not get its credential: %v", err)
	}
}

// checkLoot reads what hostileRun found and sent and fails the test if any
// of secrets is among it, or reached Slack, GitHub or a log; if it wrote into
// any of dataDirs; if Redis answered it; if any Vault token it found mints
// on an apply or break-glass role or reads apply secrets; or if any process
// of it is still alive.
func (s *stack) checkLoot(secrets map[string]string, dataDirs ...string) {
	t := s.t
	t.Helper()
	// The plan text goes to the thread right after the message with its
	// buttons: wait for it, so that what the attacker could send is seen.
	if _, err := s.slack.Wait(waitFor, func(msgs []slacksim.Message) bool {
		// Every plan ready for review has its plan file (Wait holds the
		// server's lock: the files' content is read below).
		ready, files := 0, 0
		for _, m := range msgs {
			if m.ThreadTS == "" && strings.Contains(m.Content(), "Plan ready for review") {
				ready++
			}
			for _, f := range m.Files {
				if strings.HasPrefix(f.Name, "plan-") {
					files++
				}
			}
		}
		return ready > 0 && files >= ready
	}); err != nil {
		t.Errorf("the plan text did not reach Slack: %v", err)
	}
	loot, err := os.ReadFile(filepath.Join(s.out, "loot.txt"))
	if err != nil {
		t.Fatalf("the hostile program did not run at plan time: %v\nlogs:\n%s", err, s.logs.String())
	}
	t.Logf("the hostile program found %d bytes; its processes: %s", len(loot), regexp.MustCompile(`(?m)^== (/proc/\d+)$`).FindAllString(string(loot), -1))
	for name, v := range secrets {
		if strings.Contains(string(loot), v) {
			t.Errorf("the pull request's code read %s", name)
		}
	}
	// It wrote nothing into twokey's files (inside the sandbox, the paths
	// above its run are empty directories of its own).
	var planted []string
	for _, data := range dataDirs {
		for _, pattern := range []string{"hostile-was-here", "*/hostile-was-here", "*/*/hostile-was-here"} {
			m, err := filepath.Glob(filepath.Join(data, pattern))
			if err != nil {
				t.Fatal(err)
			}
			planted = append(planted, m...)
		}
	}
	if len(planted) > 0 {
		t.Errorf("the pull request's code wrote into data_dir: %v", planted)
	}
	// Redis answers it nothing: it holds no password.
	if i := strings.LastIndex(string(loot), "== redis\n"); i < 0 || !strings.HasPrefix(string(loot)[i+len("== redis\n"):], "NOAUTH") {
		t.Errorf("Redis answered the pull request's code: %.300q", string(loot)[max(i, 0):])
	}

	// Nothing it printed that is a secret reached Slack, GitHub or a log.
	var sent strings.Builder
	for _, c := range s.slack.Calls() {
		for _, v := range c.Params {
			sent.WriteString(v + "\n")
		}
	}
	for _, m := range s.slack.Messages() {
		for _, f := range m.Files {
			if b, ok := s.slack.FileContent(f.ID); ok {
				sent.Write(b)
			}
		}
	}
	for _, r := range s.gh.Requests() {
		sent.WriteString(r.Auth + " " + r.Body + "\n")
	}
	for name, v := range secrets {
		if name == "GITHUB_TOKEN" || name == "prod plan" {
			continue // GitHub's own credential; prod's plan text is posted with prod's plan, by design
		}
		if strings.Contains(sent.String(), v) {
			t.Errorf("%s reached Slack or GitHub", name)
		}
		if strings.Contains(s.logs.String(), v) {
			t.Errorf("%s reached the log", name)
		}
	}
	if !strings.Contains(sent.String(), "== files") {
		t.Error("the plan text did not reach Slack: the test does not see what the attacker could send")
	}

	// Nothing it found mints a token on an apply or break-glass role.
	root, err := s.vault.Client()
	if err != nil {
		t.Fatal(err)
	}
	tokens := map[string]bool{}
	for _, m := range regexp.MustCompile(`hv[sb]\.[A-Za-z0-9_-]{20,}`).FindAllString(string(loot), -1) {
		tokens[m] = true
	}
	for tok := range tokens {
		c, err := root.Clone()
		if err != nil {
			t.Fatal(err)
		}
		c.SetToken(tok)
		for _, role := range []string{"twokey-staging-apply", "twokey-prod-apply", "twokey-staging-breakglass", "twokey-prod-breakglass"} {
			if sec, err := c.Auth().Token().CreateWithRole(&vault.TokenCreateRequest{}, role); err == nil && sec != nil {
				t.Errorf("a token the pull request's code found mints on %s", role)
			}
		}
		if _, err := c.Logical().Read("secret/data/staging/deploy"); err == nil {
			t.Error("a token the pull request's code found reads the apply secrets")
		}
	}
	t.Logf("%d Vault tokens in the loot (the plan token among them) tried on every apply and break-glass role", len(tokens))

	// No process of the run is alive: nothing holds the file its
	// survivors opened.
	if holders := holdersOf(t, filepath.Join(s.out, "survivor")); len(holders) > 0 {
		t.Errorf("processes of the plan outlived it: %v", holders)
	}
}

// The default provider rule: a pull request that brings its own provider
// is refused before any of its code runs.
func TestPRProvidersRefusedByDefault(t *testing.T) {
	s := newStack(t)
	s.hostilePR(3, fmt.Sprintf("touch %s/ran", s.out))
	s.startBot()
	s.slash(alice, "plan staging pr-3")
	s.planMessage(3, "provider is not allowed")
	s.ephemeral(alice, "brings provider binaries in terraform/terraform.d")
	if _, err := os.Stat(filepath.Join(s.out, "ran")); err == nil {
		t.Fatal("the pull request's provider ran")
	}
}

// holdersOf lists the processes, on the whole host, holding path open.
func holdersOf(t testing.TB, path string) []string {
	t.Helper()
	procs, err := filepath.Glob("/proc/[0-9]*/fd/*")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, fd := range procs {
		if target, err := os.Readlink(fd); err == nil && target == path {
			out = append(out, fd)
		}
	}
	return out
}

// The same attack where plans run on runner pools: the nonprod worker that
// plans it holds its pool's Vault AppRole, plan key and Redis password, and
// the prod worker beside it holds prod's. None of it is reachable.
func TestHostilePullRequestOnRunnerPool(t *testing.T) {
	w := newPoolWorld(t)
	secrets := map[string]string{}
	plant := func(name, value string) string { secrets[name] = value; return value }
	w.editServeConfig(func(cfg *config.Config) {
		cfg.Projects[0].Providers = []string{lootAddress}
		cfg.Projects[0].AllowPRProviders = true
	})
	for pool, env := range w.runnerEnv {
		for k, v := range env {
			plant(pool+" worker's "+k, v)
		}
		env["TWOKEY_OPERATOR_SECRET"] = plant(pool+" worker's operator secret", "op-"+pool+"-"+fmt.Sprint(time.Now().UnixNano()))
		if key, err := os.ReadFile(filepath.Join(w.keys, "runner-"+pool+".key")); err == nil {
			plant(pool+" worker's signing key", strings.TrimSpace(string(key)))
		}
	}
	for _, k := range []string{"SLACK_BOT_TOKEN", "SLACK_APP_TOKEN", "TWOKEY_REDIS_PASSWORD"} {
		plant("serve's "+k, w.env(k))
	}
	delete(secrets, "nonprod worker's GITHUB_TOKEN")
	delete(secrets, "prod worker's GITHUB_TOKEN")
	plant("Vault KV staging password", kvPassword)
	npData := filepath.Join(w.dir, "data-np-1")
	w.hostilePR(3, fmt.Sprintf(hostileRun, w.out, w.serveConfig, "/nonexistent", "/root", npData, w.keys,
		strings.TrimPrefix(w.redis.Addr[strings.LastIndex(w.redis.Addr, ":"):], ":")))

	w.startServe()
	w.startRunner("nonprod", "np-1")
	w.startRunner("prod", "prod-1")
	w.slash(alice, "plan staging pr-3")
	w.planMessage(3, "Plan ready for review")
	w.checkLoot(secrets, npData, filepath.Join(w.dir, "data-prod-1"), filepath.Join(w.dir, "data-serve"))
}
