package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/twokey/twokey/attest"
)

const checkPlanKey = "a2tra2tra2tra2tra2tra2tra2tra2tra2tra2tra2s="

// embeddedConfig: serve runs plans itself.
const embeddedConfig = `
vault: {address: "http://127.0.0.1:8200"}
terraform: {version: 1.12.2}
runner: {sandbox: {mode: none}}
projects:
  - name: infra
    repo: acme/infra
    environments:
      - name: staging
        approvers: {users: [UAPPROVE1]}
        vault: {apply: {role: staging-apply}}
`

// poolsConfig: runner pools run plans; staging in the default pool (the
// top-level Vault login), prod in pool prod (its own AppRole). KEYS is
// replaced with a directory of signing keys.
const poolsConfig = `
vault: {address: "http://127.0.0.1:8200"}
terraform: {version: 1.12.2}
runner: {embedded: false, sandbox: {mode: none}}
signing: {key_file: KEYS/serve.key, serve_keys: [KEYS/serve.pub]}
pools:
  - name: prod
    vault_auth: {method: approle}
projects:
  - name: infra
    repo: acme/infra
    environments:
      - name: staging
        approvers: {users: [UAPPROVE1]}
        vault: {apply: {role: staging-apply}}
      - name: prod
        pool: prod
        approvers: {users: [UAPPROVE1]}
        vault: {apply: {role: prod-apply}}
`

// secretValues are the values of every secret the tests set; none may
// ever be printed.
var secretValues = map[string]string{
	"SLACK_BOT_TOKEN":      "xoxb-secret-value-1f3a",
	"SLACK_APP_TOKEN":      "xapp-secret-value-2b4c",
	"VAULT_TOKEN":          "hvs.secret-value-3c5d",
	"VAULT_PROD_ROLE_ID":   "role-secret-value-4d6e",
	"VAULT_PROD_SECRET_ID": "secret-id-secret-value-5e7f",
	"TWOKEY_PLAN_KEY":      checkPlanKey,
}

// envWith is secretValues' variables named in names.
func envWith(names ...string) map[string]string {
	env := map[string]string{}
	for _, n := range names {
		env[n] = secretValues[n]
	}
	return env
}

type checkResult struct {
	code           int
	stdout, stderr string
}

// checkConfigOf runs `twokey check-config` on config with exactly env.
func checkConfigOf(t *testing.T, config string, env map[string]string, flags ...string) checkResult {
	t.Helper()
	dir := t.TempDir()
	if strings.Contains(config, "KEYS/") {
		if _, err := attest.WriteKeyPair(filepath.Join(dir, "serve")); err != nil {
			t.Fatal(err)
		}
		config = strings.ReplaceAll(config, "KEYS/", dir+"/")
	}
	path := filepath.Join(dir, "twokey.yaml")
	if err := os.WriteFile(path, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	code := Main(context.Background(), append([]string{"check-config", "--config", path}, flags...), &stdout, &stderr,
		func(k string) string { return env[k] })
	r := checkResult{code, stdout.String(), stderr.String()}
	for name, v := range env {
		if strings.Contains(r.stdout+r.stderr, v) {
			t.Errorf("the value of %s was printed:\n%s%s", name, r.stdout, r.stderr)
		}
	}
	return r
}

// failed checks that check-config failed, did not say ok, and printed each
// of want on a line of its own.
func (r checkResult) failed(t *testing.T, want ...string) {
	t.Helper()
	if r.code == 0 || strings.Contains(r.stdout, ": ok") {
		t.Errorf("check-config passed: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	lines := strings.Split(r.stderr, "\n")
	for _, w := range want {
		n := 0
		for _, l := range lines {
			if strings.Contains(l, w) {
				n++
			}
		}
		if n == 0 {
			t.Errorf("no line says %q:\n%s", w, r.stderr)
		}
	}
}

func (r checkResult) ok(t *testing.T) {
	t.Helper()
	if r.code != 0 || !strings.Contains(r.stdout, ": ok (") || r.stderr != "" {
		t.Errorf("check-config: exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
	}
}

// An unknown key, a validation error and missing environment variables are
// all reported together: none hides another.
func TestCheckConfigReportsEverythingAtOnce(t *testing.T) {
	bad := strings.Replace(embeddedConfig, "terraform: {version: 1.12.2}", "terraform: {version: 1.12.2}\nslack: {bot_token: xoxb-in-the-file}", 1)
	bad = strings.Replace(bad, "approvers: {users: [UAPPROVE1]}", "approvers: {users: [UAPPROVE1]}\n        required_approvals: 1\n        lock_tll: 2m", 1)
	r := checkConfigOf(t, bad, envWith())
	r.failed(t,
		// every unknown key, what Validate finds, and every missing variable
		"field bot_token not found", "field lock_tll not found",
		"required_approvals is 1",
		"SLACK_BOT_TOKEN", "SLACK_APP_TOKEN", "VAULT_TOKEN", "TWOKEY_PLAN_KEY")
	if strings.Contains(r.stderr, "xoxb-in-the-file") {
		t.Errorf("a value from the config was printed:\n%s", r.stderr)
	}
}

// Each runner pool's Vault login is checked, not only serve's.
func TestCheckConfigRunnerPoolCredentials(t *testing.T) {
	serveEnv := envWith("SLACK_BOT_TOKEN", "SLACK_APP_TOKEN", "VAULT_TOKEN", "TWOKEY_PLAN_KEY")
	r := checkConfigOf(t, poolsConfig, serveEnv)
	r.failed(t, "runner --pool prod: environment variable VAULT_PROD_ROLE_ID is not set",
		"runner --pool prod: environment variable VAULT_PROD_SECRET_ID is not set")
	if strings.Contains(r.stderr, "runner --pool default") {
		t.Errorf("the default pool's runner has its login:\n%s", r.stderr)
	}

	// One process's view: serve's pod holds no runner credential.
	checkConfigOf(t, poolsConfig, envWith("SLACK_BOT_TOKEN", "SLACK_APP_TOKEN"), "--for", "serve").ok(t)
	checkConfigOf(t, poolsConfig, envWith("VAULT_PROD_ROLE_ID", "VAULT_PROD_SECRET_ID", "TWOKEY_PLAN_KEY"), "--for", "runner", "--pool", "prod").ok(t)
	checkConfigOf(t, poolsConfig, envWith("TWOKEY_PLAN_KEY"), "--for", "runner", "--pool", "prod").
		failed(t, "VAULT_PROD_ROLE_ID", "VAULT_PROD_SECRET_ID")
	checkConfigOf(t, poolsConfig, envWith(), "--for", "runner", "--pool", "gpu").failed(t, `no pool "gpu"`)
	checkConfigOf(t, poolsConfig, envWith(), "--for", "everyone").failed(t, "--for")
}

// Every process that runs plans needs the plan key; without it a plan
// could only be applied by the process that made it, and not after it
// restarts.
func TestCheckConfigPlanKey(t *testing.T) {
	checkConfigOf(t, embeddedConfig, envWith("SLACK_BOT_TOKEN", "SLACK_APP_TOKEN", "VAULT_TOKEN")).
		failed(t, "environment variable TWOKEY_PLAN_KEY is not set")

	r := checkConfigOf(t, poolsConfig, envWith("SLACK_BOT_TOKEN", "SLACK_APP_TOKEN", "VAULT_TOKEN", "VAULT_PROD_ROLE_ID", "VAULT_PROD_SECRET_ID"))
	r.failed(t, "runner --pool prod: ", "TWOKEY_PLAN_KEY_PROD", "runner --pool default: ")
	if strings.Contains(r.stderr, "serve: ") || strings.Contains(r.stderr, "serve,") {
		t.Errorf("serve of runner pools seals no plans, but was told to:\n%s", r.stderr)
	}

	bad := envWith("SLACK_BOT_TOKEN", "SLACK_APP_TOKEN", "VAULT_TOKEN")
	bad["TWOKEY_PLAN_KEY"] = "not-a-key-but-secret-9a8b"
	checkConfigOf(t, embeddedConfig, bad).failed(t, "TWOKEY_PLAN_KEY must be 32 bytes")
}

// A clean config says ok, exits 0 and prints nothing on stderr.
func TestCheckConfigClean(t *testing.T) {
	checkConfigOf(t, embeddedConfig, envWith("SLACK_BOT_TOKEN", "SLACK_APP_TOKEN", "VAULT_TOKEN", "TWOKEY_PLAN_KEY")).ok(t)
	r := checkConfigOf(t, poolsConfig, secretValues)
	r.ok(t)
	if !strings.Contains(r.stdout, ": ok (1 projects, 2 environments)") || !strings.Contains(r.stdout, "sandbox: none") {
		t.Errorf("stdout:\n%s", r.stdout)
	}
}

// A config that cannot be read at all is a clear error, and says the
// environment went unchecked.
func TestCheckConfigUnreadable(t *testing.T) {
	checkConfigOf(t, "projects: [\n", secretValues).failed(t, "yaml: line", "environment was not checked")
	checkConfigOf(t, "", secretValues).failed(t, "config is empty")
	var stdout, stderr bytes.Buffer
	if code := Main(context.Background(), []string{"check-config", "--config", filepath.Join(t.TempDir(), "missing.yaml")}, &stdout, &stderr,
		func(string) string { return "" }); code == 0 || !strings.Contains(stderr.String(), "missing.yaml: no such file") {
		t.Errorf("missing file: exit %d\n%s%s", code, stdout.String(), stderr.String())
	}
}
