package runner_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twokey/twokey/approvals"
	"github.com/twokey/twokey/devstack/stacktest"
	"github.com/twokey/twokey/runner"
)

// pem is a private key as a credential carries it: newlines, and (in its
// comment) quotes and a backslash.
const pem = "-----BEGIN PRIVATE KEY-----\n" +
	"MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7VJTUt9Us8cKj\n" +
	"MzEfYyjiWA4R4/M2bS1GB4t7NXp98C3SC6dVMvDuictGeurT8jNbvJZHtCSuYEvu\n" +
	"-----END PRIVATE KEY-----\n" + `comment "quoted" C:\keys`

// leaks reports every form of secret found in text.
func leaks(text string, secrets ...string) []string {
	var found []string
	for _, s := range secrets {
		forms := map[string]string{"raw": s, "json": mustJSON(s), "go %q": strconv.Quote(s),
			"base64": base64.StdEncoding.EncodeToString([]byte(s))}
		for _, line := range strings.Split(s, "\n") {
			if len(line) >= 20 {
				forms["line "+line[:10]] = line
			}
		}
		for kind, f := range forms {
			f = strings.Trim(f, `"`)
			if strings.Contains(text, f) {
				found = append(found, fmt.Sprintf("%s form of %.12q…", kind, s))
			}
		}
	}
	return found
}

func mustJSON(s string) string { b, _ := json.Marshal(s); return string(b) }

func TestRedactForms(t *testing.T) {
	b, _ := json.Marshal(map[string]string{"err": strconv.Quote(pem)}) // escaped twice
	texts := []string{
		"raw: " + pem,
		"json: " + mustJSON(pem),
		"go: " + fmt.Sprintf("%q", pem),
		"hcl: " + strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`).Replace(pem),
		"twice: " + string(b),
		"crlf: " + strings.ReplaceAll(pem, "\n", `\r\n`),
		"heredoc:\n  <<-EOT\n    " + strings.ReplaceAll(pem, "\n", "\n    ") + "\n  EOT",
		"base64: " + base64.StdEncoding.EncodeToString([]byte(pem)),
		"base64url: " + base64.RawURLEncoding.EncodeToString([]byte(pem)),
	}
	for _, text := range texts {
		got := runner.Redact(text, pem)
		if l := leaks(got, pem); len(l) > 0 || !strings.Contains(got, runner.Redacted) {
			t.Errorf("%.10q…: leaks %v in %q", text, l, got)
		}
	}
	// Short values and short lines are not redacted alone.
	if got := runner.Redact("a b c } key", "a\n}\nb"); got != "a b c } key" {
		t.Errorf("short parts redacted: %q", got)
	}
}

// A sensitive variable whose value flows, through nonsensitive(), into an
// attribute terraform shows; a sensitive attribute path; a sensitive
// output echoed by a plain one: the plan text shows none of them.
func TestPlanTextHidesSensitiveValues(t *testing.T) {
	const (
		password = "tfvars-password-Zq9x"
		token    = "marked-token-Wm4r"
		outValue = "output-secret-Kp3d"
	)
	multi := "line-one-secret-Aa1\nline-two-secret-Bb2\n"
	f := setup(t, 30*time.Second)
	f.target.VarFiles = []string{"staging.tfvars"}
	f.src.trees[sha1] = map[string]string{
		"infra/staging.tfvars": fmt.Sprintf("db_password = %q\nmulti = %q\n", password, multi),
		"infra/main.tf": backendTF + `
variable "db_password" {
  type      = string
  sensitive = true
}
variable "multi" {
  type      = string
  sensitive = true
}
locals {
  token = sensitive("` + token + `")
}
resource "terraform_data" "leak" {
  input = {
    plain   = nonsensitive(var.db_password)
    encoded = base64encode(nonsensitive(var.db_password))
    quoted  = jsonencode(nonsensitive(var.db_password))
    lines   = nonsensitive(var.multi)
    token   = nonsensitive(local.token)
  }
}
resource "terraform_data" "marked" {
  input = { user = "app", token = local.token }
}
output "secret" {
  value     = "` + outValue + `"
  sensitive = true
}
output "echo" {
  value = "` + outValue + `"
}
`}
	_, res := f.plan(t, "p1", sha1)
	if l := leaks(res.Text, password, token, outValue, multi); len(l) > 0 {
		t.Errorf("plan text leaks %v:\n%s", l, res.Text)
	}
	if !strings.Contains(res.Text, runner.Redacted) || !strings.Contains(res.Text, "terraform_data.leak") {
		t.Errorf("plan text:\n%s", res.Text)
	}
}

// A plan credential holding a PEM key, which a provider reads and terraform
// then prints, escaped, in an error: the error shows no form of it.
func TestCredentialInTerraformErrorIsRedacted(t *testing.T) {
	f := keyReader(t, pem, `
resource "terraform_data" "a" {
  input = tonumber(data.loot_run.key.output)
}
`)
	lease, err := f.locks.Acquire(context.Background(), runner.LockKey("acme", "staging"), runner.Holder{}, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	_, err = f.r.Plan(context.Background(), runner.PlanJob{PlanID: "p1", Rev: f.rev(sha1), Lease: lease, Target: f.target})
	var te *runner.TerraformError
	if !errors.As(err, &te) {
		t.Fatalf("err = %v", err)
	}
	if l := leaks(err.Error(), pem); len(l) > 0 {
		t.Errorf("error leaks %v:\n%s", l, err)
	}
	if !strings.Contains(te.Output, "data.loot_run.key.output is "+runner.Redacted) &&
		!strings.Contains(te.Output, "data.loot_run.key.output is \""+runner.Redacted) {
		t.Errorf("terraform's escaped value is not where the test expects it:\n%s", te.Output)
	}
}

// A secret inside longer base64 — "user:password" in a Basic auth header,
// a key followed by a newline — is found at any of the three byte offsets,
// and short values are not looked for that way.
func TestRedactBase64Inside(t *testing.T) {
	const secret = "inside-base64-Tq7w"
	for _, prefix := range []string{"", "u:", "user:", "admin:", "ab"} {
		for _, suffix := range []string{"", "\n", "@host:5432"} {
			for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.URLEncoding} {
				text := "Authorization: Basic " + enc.EncodeToString([]byte(prefix+secret+suffix))
				got := runner.Redact(text, secret)
				if !strings.Contains(got, runner.Redacted) {
					t.Errorf("%q+secret+%q: not redacted: %q", prefix, suffix, got)
				}
			}
		}
	}
	if got := runner.Redact(base64.StdEncoding.EncodeToString([]byte("x:short!")), "short!"); strings.Contains(got, runner.Redacted) {
		t.Errorf("a short value was looked for inside base64: %q", got)
	}
}

// A plan that fails leaves no plan JSON to read the sensitive values from,
// and an apply says more than its plan: a precondition's message or a
// failing provisioner carries a sensitive variable through nonsensitive().
// Neither error shows it.
func TestFailedRunsHideSensitiveValues(t *testing.T) {
	const password = "failed-run-password-Hx3v"
	f := setup(t, 30*time.Second)
	f.target.VarFiles = []string{"staging.tfvars"}
	head := backendTF + `
variable "pw" {
  type      = string
  sensitive = true
}
`
	f.src.trees[sha1] = map[string]string{
		"infra/staging.tfvars": fmt.Sprintf("pw = %q\n", password),
		"infra/main.tf": head + `
resource "terraform_data" "a" {
  input = "a"
  lifecycle {
    precondition {
      condition     = length(var.pw) > 64
      error_message = "the password ${nonsensitive(var.pw)} (${base64encode("u:${nonsensitive(var.pw)}")}) is too short"
    }
  }
}
`}
	lease, err := f.locks.Acquire(context.Background(), runner.LockKey("acme", "staging"), runner.Holder{}, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	_, err = f.r.Plan(context.Background(), runner.PlanJob{PlanID: "p1", Rev: f.rev(sha1), Lease: lease, Target: f.target})
	var te *runner.TerraformError
	if !errors.As(err, &te) || !strings.Contains(te.Output, "is too short") {
		t.Fatalf("err = %v", err)
	}
	if l := leaks(te.Output, password); len(l) > 0 || !strings.Contains(te.Output, runner.Redacted) {
		t.Errorf("failed plan leaks %v:\n%s", l, te.Output)
	}
	if err := f.locks.Release(context.Background(), lease); err != nil {
		t.Fatal(err)
	}

	const sha2 = "2222222222222222222222222222222222222222"
	f.src.trees[sha2] = map[string]string{
		"infra/staging.tfvars": fmt.Sprintf("pw = %q\n", password),
		"infra/main.tf": head + `
resource "terraform_data" "a" {
  input = "a"
  provisioner "local-exec" {
    command = "echo ${nonsensitive(var.pw)}; printf 'u:%s' ${nonsensitive(var.pw)} | base64; exit 1"
  }
}
`}
	lease, res := f.plan(t, "p2", sha2)
	_, err = f.r.Apply(context.Background(), runner.ApplyJob{Permit: grant(t, "p2", lease, sha2, res), Rev: f.rev(sha2), Target: f.target})
	if !errors.As(err, &te) || te.Step != "apply" || !strings.Contains(te.Output, "local-exec") {
		t.Fatalf("err = %v", err)
	}
	if l := leaks(te.Output, password); len(l) > 0 || !strings.Contains(te.Output, runner.Redacted) {
		t.Errorf("failed apply leaks %v:\n%s", l, te.Output)
	}
}

// A credential's value used as an instance key appears in no address the
// preview or the summary shows (nor in the plan's text).
func TestCredentialInAnAddressIsRedacted(t *testing.T) {
	const secret = "addr-secret-9f8e7d6c5b4a"
	f := keyReader(t, secret, `
resource "terraform_data" "k" {
  for_each = toset([data.loot_run.key.output])
}
`)
	lease, err := f.locks.Acquire(context.Background(), runner.LockKey("acme", "staging"), runner.Holder{}, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	var previews []approvals.Summary
	res, err := f.r.Plan(context.Background(), runner.PlanJob{PlanID: "p1", Rev: f.rev(sha1), Lease: lease, Target: f.target,
		Preview: func(s approvals.Summary) { previews = append(previews, s) }})
	if err != nil {
		t.Fatal(err)
	}
	if len(previews) != 1 || len(res.Summary.Resources) != 1 {
		t.Fatalf("previews %+v, summary %+v", previews, res.Summary)
	}
	for what, s := range map[string]approvals.Summary{"preview": previews[0], "summary": res.Summary} {
		if a := s.Resources[0].Address; strings.Contains(a, secret) || !strings.Contains(a, runner.Redacted) {
			t.Errorf("%s shows the address %q", what, a)
		}
	}
	if strings.Contains(res.Text, secret) {
		t.Errorf("plan text leaks the key:\n%s", res.Text)
	}
}

// keyReader is a fixture whose plan credential maps key to SIGNING_KEY, and
// whose commit sha1 reads it with the loot provider (data.loot_run.key)
// and goes on with rest.
func keyReader(t *testing.T, key, rest string) fixture {
	t.Helper()
	f := setup(t, 30*time.Second)
	f.creds.values = map[string]string{"key": key}
	f.target.PlanCreds = &runner.CredentialRequest{Role: "twokey-staging-plan", TTL: time.Minute, NumUses: 1,
		Secrets: []runner.SecretRef{{Path: "secret/data/staging/plan", Env: map[string]string{"SIGNING_KEY": "key"}}}}
	f.target.Providers = runner.Providers{Allowed: []string{"example.com/twokey/loot"}, AllowPR: true}
	f.src.trees[sha1] = map[string]string{"infra/main.tf": `
terraform {
  backend "local" {}
  required_providers {
    loot = { source = "example.com/twokey/loot", version = "1.0.0" }
  }
}
data "loot_run" "key" {
  program = "printf %s \"$SIGNING_KEY\""
}
` + rest,
		lootBinary: string(stacktest.LootProvider(t)),
	}
	return f
}
