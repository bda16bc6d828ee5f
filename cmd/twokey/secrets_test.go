package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/twokey/twokey/config"
	"github.com/twokey/twokey/devstack"
	"github.com/twokey/twokey/runner/ghsim"
)

// Secrets planted in the terraform config and in Vault, each of a kind the
// plan JSON or the credentials mark secret.
const (
	// secretVar is the value of a `sensitive = true` variable that flows,
	// through nonsensitive(), into a plain attribute, its base64 and an
	// output, and at apply time into a failing provisioner's output.
	secretVar = "tfvar-db-password-Qm7r2x"
	// secretAttr is marked by sensitive() and lands in an after_sensitive
	// path; a second resource carries it unmarked.
	secretAttr = "marked-attr-token-Vx8k4p"
	// secretOutput is a sensitive output's value, also echoed by a plain one.
	secretOutput = "sensitive-output-Jc5w9z"
)

// planKey is a plan credential from Vault KV: a PEM key with newlines,
// quotes and a backslash, which a provider reads and terraform prints in an
// error, escaped.
const planKey = "-----BEGIN PRIVATE KEY-----\n" +
	"MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQDpl4nTedK3yW1s\n" +
	"Zf8QmR2vXo7cKa9LtB3uYw6PnE1jHs4GdVx0iMqTrC5bUeO8kJlN7yAgFhP2oRwZ\n" +
	"-----END PRIVATE KEY-----\n" + `comment "ops key" C:\keys\plan`

// secretForms lists how text could carry v, as an attacker would look for
// it, independently of runner.Forms: raw, JSON-escaped, Go %q, with its
// newlines \n-joined, base64 (padded and raw, both alphabets), and each
// line of a multi-line value that is long enough to be key material.
func secretForms(v string) map[string]string {
	j, _ := json.Marshal(v)
	forms := map[string]string{
		"raw":          v,
		"json":         strings.Trim(string(j), `"`),
		"%q":           strings.Trim(strconv.Quote(v), `"`),
		`\n-joined`:    strings.ReplaceAll(v, "\n", `\n`),
		"base64":       base64.StdEncoding.EncodeToString([]byte(v)),
		"base64 raw":   base64.RawStdEncoding.EncodeToString([]byte(v)),
		"base64 url":   base64.RawURLEncoding.EncodeToString([]byte(v)),
		"json of json": strings.Trim(string(must(json.Marshal(string(j)))), `"`),
	}
	if strings.Contains(v, "\n") {
		for i, line := range strings.Split(v, "\n") {
			if len(line) >= 20 {
				forms[fmt.Sprintf("line %d", i+1)] = line
				forms[fmt.Sprintf("line %d %%q", i+1)] = strings.Trim(strconv.Quote(line), `"`)
			}
		}
	}
	for shift := range 3 {
		forms[fmt.Sprintf("base64 at offset %d", shift)] = base64Inside(v, shift)
	}
	return forms
}

// base64Inside is what the base64 of any bytes with v at an offset of
// shift (mod 3) bytes always contains: the characters on which two
// encodings with different bytes around v agree.
func base64Inside(v string, shift int) string {
	a := base64.StdEncoding.EncodeToString([]byte(strings.Repeat("\x00", shift) + v + "\x00\x00"))
	b := base64.StdEncoding.EncodeToString([]byte(strings.Repeat("\xff", shift) + v + "\xff\xff"))
	i := 0
	for a[i] != b[i] {
		i++
	}
	j := i
	for j < len(a) && a[j] == b[j] {
		j++
	}
	return a[i:j]
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// outbound is every piece of text twokey sent out, by where it went.
func (s *stack) outbound() map[string]string {
	out := map[string]string{}
	for i, c := range s.slack.Calls() {
		keys := make([]string, 0, len(c.Params))
		for k := range c.Params {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		var b strings.Builder
		for _, k := range keys {
			fmt.Fprintf(&b, "%s=%s\n", k, c.Params[k])
		}
		out[fmt.Sprintf("Slack call %d %s", i, c.Method)] = b.String()
	}
	for _, m := range s.slack.Messages() {
		out[fmt.Sprintf("Slack message %s (ephemeral %v)", m.TS, m.Ephemeral)] = m.Content()
		for _, f := range m.Files {
			content, _ := s.slack.FileContent(f.ID)
			out["Slack upload "+f.Name] = string(content)
		}
	}
	for i, r := range s.gh.Requests() {
		out[fmt.Sprintf("GitHub request %d %s %s", i, r.Method, r.Path)] = r.Body
	}
	for _, c := range s.gh.Comments("acme/infra") {
		out[fmt.Sprintf("GitHub comment on #%d", c.PR)] = strings.Join(c.Bodies, "\n")
	}
	for i, st := range s.gh.Statuses("acme/infra") {
		out[fmt.Sprintf("GitHub status %d", i)] = fmt.Sprintf("%+v", st)
	}
	out["serve's log"] = s.logs.String()
	return out
}

// checkNoLeaks fails the test for every form of every secret found in
// anything twokey sent out.
func (s *stack) checkNoLeaks(secrets map[string]string) {
	s.t.Helper()
	out := s.outbound()
	places := make([]string, 0, len(out))
	for p := range out {
		places = append(places, p)
	}
	sort.Strings(places)
	for name, v := range secrets {
		for kind, f := range secretForms(v) {
			for _, p := range places {
				if i := strings.Index(out[p], f); i >= 0 {
					lo, hi := max(0, i-80), min(len(out[p]), i+len(f)+40)
					s.t.Errorf("%s leaks (%s form) in %s: …%s…", name, kind, p, out[p][lo:hi])
				}
			}
		}
	}
}

// Issue #14 item 5, the attacker's test: each kind of secret is planted and
// driven through the real flow — plan, approve, apply, a failing apply, a
// failing plan — and no form of any of them is in any Slack call or upload,
// any GitHub call, or serve's log.
func TestSecretPlantingsNeverLeave(t *testing.T) {
	s := newStack(t)
	ctx := context.Background()
	// Plans get a read-only credential from Vault KV: the PEM key.
	if err := s.vault.Apply(ctx, devstack.VaultSetup{
		Policies: map[string]string{"secrets-staging-plan": `
path "secret/data/staging/plan-key" { capabilities = ["read"] }
path "auth/token/lookup-self" { capabilities = ["read"] }`},
		TokenRoles: map[string]devstack.TokenRole{"twokey-secrets-staging-plan": {AllowedPolicies: []string{"secrets-staging-plan"}, Orphan: true}},
		KV:         map[string]map[string]any{"staging/plan-key": {"key": planKey}},
	}); err != nil {
		t.Fatal(err)
	}
	cfg := s.baseConfig(s.dir+"/data", s.terraform())
	cfg.Projects[0].Providers = []string{lootAddress}
	cfg.Projects[0].AllowPRProviders = true
	staging := &cfg.Projects[0].Environments[0]
	staging.Vault.Plan = &config.Credential{Role: "twokey-secrets-staging-plan", TTL: staging.Vault.Plan.TTL, NumUses: 2,
		Secrets: []config.VaultSecret{{Path: "secret/data/staging/plan-key", Env: map[string]string{"SIGNING_KEY": "key"}}}}
	s.config = s.write("secrets.yaml", cfg)
	s.startBot()

	// (c) The plan credential, read by a provider and printed by terraform
	// in a failed precondition: escaped in the condition's values, JSON-
	// encoded and base64-encoded in the error message.
	s.secretsPR(3, `
data "loot_run" "key" {
  program = "printf %s \"$SIGNING_KEY\""
}
resource "terraform_data" "key" {
  input = "pr-3"
  lifecycle {
    precondition {
      condition     = !startswith(data.loot_run.key.output, "-----BEGIN")
      error_message = "a key must not be committed: ${jsonencode(data.loot_run.key.output)} (base64 ${base64encode(data.loot_run.key.output)}, as basic auth ${base64encode("ops:${data.loot_run.key.output}")})"
    }
  }
}
`)
	s.slash(alice, "plan staging pr-3")
	s.planMessage(3, "failed")
	s.ephemeral(alice, "data.loot_run.key.output is \"[redacted]\"")

	// A plan that fails leaves no plan JSON, yet its error carries the
	// sensitive variable (set in a .auto.tfvars file) through nonsensitive().
	s.secretsPR(4, `
variable "db_password" {
  type      = string
  sensitive = true
}
resource "terraform_data" "db" {
  input = "pr-4"
  lifecycle {
    precondition {
      condition     = length(var.db_password) > 64
      error_message = "the password ${nonsensitive(var.db_password)} (${base64encode("user:${nonsensitive(var.db_password)}")}) is too short"
    }
  }
}
`, "terraform/secrets.auto.tfvars", fmt.Sprintf("db_password = %q\n", secretVar))
	s.slash(alice, "plan staging pr-4")
	s.planMessage(4, "failed")
	s.ephemeral(alice, "is too short")

	// (a), (b), (d): a sensitive variable in a plain attribute, in base64
	// and in an output; a sensitive attribute path; a sensitive output.
	s.secretsPR(1, fmt.Sprintf(`
variable "db_password" {
  type      = string
  sensitive = true
  default   = %q
}
locals {
  token = sensitive(%q)
}
resource "terraform_data" "app" {
  input = {
    password = nonsensitive(var.db_password)
    encoded  = base64encode(nonsensitive(var.db_password))
    auth     = "Basic ${base64encode("user:${nonsensitive(var.db_password)}")}"
    wrapped  = base64encode("ci:${nonsensitive(var.db_password)}\n")
    token    = nonsensitive(local.token)
  }
}
resource "terraform_data" "marked" {
  input = { user = "app", token = local.token }
}
output "password" {
  value = nonsensitive(var.db_password)
}
output "secret" {
  value     = %q
  sensitive = true
}
output "echo" {
  value = %q
}
`, secretVar, secretAttr, secretOutput, secretOutput))
	s.slash(alice, "plan staging pr-1")
	msg := s.planMessage(1, "Plan ready for review")
	s.thread(msg, "") // the uploaded plan text
	s.click(bob, msg, approve)
	s.click(carol, msg, approve)
	s.waitTS(msg.TS, "Applied")

	// At apply: a provisioner prints the apply credential (the Vault KV
	// password), its base64, and the sensitive variable, then fails.
	s.secretsPR(2, fmt.Sprintf(`
variable "db_password" {
  type      = string
  sensitive = true
  default   = %q
}
resource "terraform_data" "fails" {
  input = "pr-2"
  provisioner "local-exec" {
    command = "printf '%%s' \"$DB_PASSWORD\" | base64; printf 'user:%%s' \"$DB_PASSWORD\" | base64; echo \"$DB_PASSWORD\"; echo ${nonsensitive(var.db_password)}; exit 1"
  }
}
`, secretVar))
	s.slash(alice, "plan staging pr-2")
	msg = s.planMessage(2, "Plan ready for review")
	s.click(bob, msg, approve)
	s.click(carol, msg, approve)
	s.waitTS(msg.TS, "failed")
	s.thread(msg, "local-exec provisioner error")

	s.checkNoLeaks(map[string]string{
		"sensitive variable": secretVar, "sensitive attribute": secretAttr, "sensitive output": secretOutput,
		"plan credential (PEM)": planKey, "apply credential (Vault KV)": kvPassword,
	})
	// The checks looked where the secrets were: the plan text uploaded to
	// the thread, and terraform's errors shown to people.
	var upload bool
	for place, text := range s.outbound() {
		if strings.HasPrefix(place, "Slack upload plan-") && strings.Contains(text, "terraform_data.app") {
			upload = strings.Contains(text, "[redacted]")
		}
	}
	if !upload {
		t.Error("no uploaded plan text of PR #1 with a redaction in it")
	}
	if t.Failed() {
		t.Logf("messages:\n%s", s.dump())
	}
}

// secretsPR opens pull request n with body after a terraform block that
// allows the loot provider, which the PR ships, and more files (path,
// content, …).
func (s *stack) secretsPR(n int, body string, more ...string) {
	s.t.Helper()
	tf := fmt.Sprintf("terraform {\n  backend \"local\" {}\n  required_providers {\n    loot = { source = %q, version = \"1.0.0\" }\n  }\n}\n", lootAddress) + body
	plugin := "terraform/terraform.d/plugins/" + lootAddress + "/1.0.0/linux_amd64/terraform-provider-loot_v1.0.0"
	files := map[string]*string{"terraform/main.tf": devstack.Str(tf), plugin: devstack.Str(lootProvider(s.t))}
	for i := 0; i+1 < len(more); i += 2 {
		files[more[i]] = devstack.Str(more[i+1])
	}
	ctx := context.Background()
	sha, err := s.repo.Commit(ctx, fmt.Sprintf("pr-%d", n), s.main, fmt.Sprintf("PR %d", n), files)
	if err != nil {
		s.t.Fatal(err)
	}
	if err := s.repo.PublishPull(ctx, n, sha); err != nil {
		s.t.Fatal(err)
	}
	s.gh.SetPull("acme/infra", ghsim.Pull{Number: n, HeadSHA: sha, HeadRef: fmt.Sprintf("pr-%d", n), Title: fmt.Sprintf("Change %d", n)})
	s.prs[n] = sha
}
