package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const minimal = `
vault: {address: "http://127.0.0.1:8200"}
terraform: {version: 1.12.2}
projects:
  - name: infra
    repo: acme/infra
    environments:
      - name: staging
        approvers: {users: [UAPPROVE1]}
        vault: {apply: {role: staging-apply}}
`

func TestExampleConfigIsValid(t *testing.T) {
	if _, err := Load("../deploy/demo/twokey.yaml"); err != nil {
		t.Fatalf("deploy/demo/twokey.yaml: %v", err)
	}
	c, err := Load("../deploy/twokey.example.yaml")
	if err != nil {
		t.Fatalf("deploy/twokey.example.yaml: %v", err)
	}
	_, prod, err := c.Resolve("", "prod")
	if err != nil || prod.Vault.Apply.Role != "twokey-prod-apply" {
		t.Fatalf("resolve prod: %v", err)
	}
}

func TestDefaults(t *testing.T) {
	c, err := Parse(strings.NewReader(minimal))
	if err != nil {
		t.Fatal(err)
	}
	e := c.Projects[0].Environments[0]
	if !*e.Protected || e.RequiredApprovals != 2 || e.LockTTL.D() != DefaultLockTTL || e.PlanTTL.D() != DefaultPlanTTL {
		t.Fatalf("defaults not applied: %+v", e)
	}
	if e.Vault.Apply.TTL.D() != DefaultCredentialTTL || e.Vault.Apply.NumUses != DefaultNumUses {
		t.Fatalf("credential defaults not applied: %+v", e.Vault.Apply)
	}
	if c.Slack.APIURL != DefaultSlackAPIURL || c.Slack.BotTokenEnv != "SLACK_BOT_TOKEN" || c.Vault.Auth.Method != "token" {
		t.Fatalf("top-level defaults not applied: %+v", c.Slack)
	}
}

func TestUnknownKeyRejected(t *testing.T) {
	_, err := Parse(strings.NewReader(minimal + "extra_key: 1\n"))
	if err == nil || !strings.Contains(err.Error(), "extra_key") {
		t.Fatalf("err = %v, want unknown field named", err)
	}
	_, err = Parse(strings.NewReader(strings.Replace(minimal, "approvers:", "aprovers:", 1)))
	if err == nil || !strings.Contains(err.Error(), "aprovers") {
		t.Fatalf("misspelt key: err = %v", err)
	}
}

func TestValidateListsEveryProblem(t *testing.T) {
	bad := `
slack: {api_url: "slack.com"}
redis: {url: "redis://user:pw@host:6379"}
vault: {auth: {method: kerberos}}
terraform: {env: {PATH: /x}}
projects:
  - name: Infra
    repo: acme
    dir: ../escape
    environments:
      - name: prod
        required_approvals: 1
        approvers: {users: [alice], groups: [platform]}
        channels: [general]
        lock_ttl: 500ms
        vault:
          apply:
            role: ""
            ttl: 1m
            num_uses: 1
            secrets:
              - path: secret/data/a
                env: {TF_VAR_password: password, VAULT_TOKEN: token}
              - path: aws/creds/x
                env: {AWS_ACCESS_KEY_ID: access_key}
      - name: prod
        approvers: {users: [UOK1]}
        vault: {apply: {role: r}}
`
	_, err := Parse(strings.NewReader(bad))
	if err == nil {
		t.Fatal("invalid config accepted")
	}
	for _, want := range []string{
		"slack.api_url", "redis.url", "vault.address", "vault.auth.method", "terraform.version",
		`terraform.env: "PATH"`, `name "Infra"`, `repo "acme"`, "../escape",
		"required_approvals is 1", `"alice" is not a Slack user ID`, `"platform" is not a Slack user group ID`,
		`"general" is not a Slack channel ID`, "lock_ttl must be at least 1s", "role is required",
		"shorter than apply_timeout", "num_uses (1) is less than", "saved in the plan file",
		`"VAULT_TOKEN" cannot be set`, "defined twice",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("validation error does not mention %q", want)
		}
	}
	if n := len(strings.Split(err.Error(), "\n")); n < 19 {
		t.Errorf("only %d problems reported:\n%v", n, err)
	}
}

func TestResolve(t *testing.T) {
	two := minimal + `
  - name: network
    repo: acme/network
    environments:
      - name: staging
        approvers: {users: [UAPPROVE1]}
        vault: {apply: {role: r}}
      - name: prod
        approvers: {users: [UAPPROVE1]}
        vault: {apply: {role: r}}
`
	c, err := Parse(strings.NewReader(two))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		project, env string
		wantProject  string
		wantErr      error
	}{
		{project: "", env: "prod", wantProject: "network"},
		{project: "infra", env: "staging", wantProject: "infra"},
		{project: "network", env: "staging", wantProject: "network"},
		{project: "", env: "staging", wantErr: ErrNeedProject},
		{project: "", env: "qa", wantErr: ErrUnknownEnv},
		{project: "infra", env: "prod", wantErr: ErrUnknownEnv},
		{project: "nope", env: "prod", wantErr: ErrUnknownProject},
	}
	for _, tt := range tests {
		p, e, err := c.Resolve(tt.project, tt.env)
		if !errors.Is(err, tt.wantErr) {
			t.Errorf("Resolve(%q, %q) err = %v, want %v", tt.project, tt.env, err, tt.wantErr)
			continue
		}
		if err == nil && (p.Name != tt.wantProject || e.Name != tt.env) {
			t.Errorf("Resolve(%q, %q) = %s/%s", tt.project, tt.env, p.Name, e.Name)
		}
		if err != nil && err.Error() == "" {
			t.Errorf("empty error message")
		}
	}
}

func TestSecretsNeverPrint(t *testing.T) {
	const value = "xoxb-very-secret"
	s := Secret(value)
	var buf bytes.Buffer
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("x", "token", s, "struct", Secrets{SlackBotToken: s})
	js, _ := json.Marshal(Secrets{SlackBotToken: s})
	for _, out := range []string{
		fmt.Sprint(s), fmt.Sprintf("%v %s %q %+v %#v", s, s, s, s, s),
		fmt.Sprintf("%+v %#v", Secrets{SlackBotToken: s}, Secrets{SlackBotToken: s}),
		buf.String(), string(js),
	} {
		if strings.Contains(out, value) {
			t.Errorf("secret printed: %s", out)
		}
	}
	if s.Reveal() != value {
		t.Fatal("Reveal lost the value")
	}
}

func TestLoadSecrets(t *testing.T) {
	c, err := Parse(strings.NewReader(minimal))
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.LoadSecrets(func(string) string { return "" }, c.ForServe())
	for _, want := range []string{"SLACK_BOT_TOKEN", "SLACK_APP_TOKEN", "VAULT_TOKEN"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("missing %s not reported: %v", want, err)
		}
	}
	env := map[string]string{"SLACK_BOT_TOKEN": "b", "SLACK_APP_TOKEN": "a", "VAULT_TOKEN": "v", "TWOKEY_PLAN_KEY": planKey}
	s, err := c.LoadSecrets(func(k string) string { return env[k] }, c.ForServe())
	if err != nil || s.VaultToken.Reveal() != "v" {
		t.Fatalf("LoadSecrets: %v", err)
	}
}

func TestDurationYAML(t *testing.T) {
	c, err := Parse(strings.NewReader(strings.Replace(minimal, "name: staging", "name: staging\n        plan_ttl: 90m", 1)))
	if err != nil {
		t.Fatal(err)
	}
	if got := c.Projects[0].Environments[0].PlanTTL.D(); got != 90*time.Minute {
		t.Fatalf("plan_ttl = %v", got)
	}
	_, err = Parse(strings.NewReader(strings.Replace(minimal, "name: staging", "name: staging\n        plan_ttl: soon", 1)))
	if err == nil || !strings.Contains(err.Error(), "not a duration") {
		t.Fatalf("bad duration: %v", err)
	}
}

const pipeline = `
vault: {address: "http://127.0.0.1:8200"}
terraform: {version: 1.12.2}
runner: {embedded: false}
pools:
  - name: prod
    vault_auth: {method: approle}
projects:
  - name: network
    repo: acme/network
    terraform: {path: /opt/tofu, version: 1.12.6, env: {TF_PLUGIN_CACHE_DIR: /var/cache/tofu}}
    environments:
      - name: staging
        approvers: {users: [UAPPROVE1]}
        vault: {apply: {role: r}}
      - name: prod
        requires: staging
        soak: 1h
        pool: prod
        workspace: blue
        approvers: {users: [UAPPROVE1]}
        vault: {apply: {role: r}}
`

func TestPipelineConfig(t *testing.T) {
	c, err := Parse(strings.NewReader(pipeline))
	if err != nil {
		t.Fatal(err)
	}
	p, prod, _ := c.Resolve("network", "prod")
	if prod.Requires != "staging" || prod.Soak.D() != time.Hour || prod.Pool != "prod" || p.Env("staging").Pool != DefaultPool {
		t.Fatalf("prod = %+v", prod)
	}
	if tf := c.TerraformFor(p); tf.Path != "/opt/tofu" || tf.Version != "1.12.6" || tf.Env["TF_PLUGIN_CACHE_DIR"] != "/var/cache/tofu" {
		t.Fatalf("TerraformFor = %+v", tf)
	}
	if c.Runner.IsEmbedded() || c.Runner.VisibilityTimeout.D() != 30*time.Second {
		t.Fatalf("runner = %+v", c.Runner)
	}
	pool, ok := c.PoolFor("prod")
	if !ok || pool.Vault.RoleIDEnv != "VAULT_PROD_ROLE_ID" {
		t.Fatalf("pool = %+v", pool)
	}

	// serve without an embedded runner needs no Vault login at all;
	// the prod runner needs the prod pool's, and no Slack token.
	env := map[string]string{"SLACK_BOT_TOKEN": "b", "SLACK_APP_TOKEN": "a", "VAULT_PROD_ROLE_ID": "r", "VAULT_PROD_SECRET_ID": "s",
		"TWOKEY_PLAN_KEY_PROD": planKey}
	get := func(k string) string { return env[k] }
	s, err := c.LoadSecrets(get, c.ForServe())
	if err != nil || s.VaultToken != "" || s.VaultRoleID != "" {
		t.Fatalf("serve secrets: %v %+v", err, s)
	}
	s, err = c.LoadSecrets(get, Needs{Vault: true, Pool: "prod"})
	if err != nil || s.VaultRoleID.Reveal() != "r" || s.SlackBotToken != "" {
		t.Fatalf("prod runner secrets: %v", err)
	}
	if _, err := c.LoadSecrets(get, Needs{Vault: true, Pool: "default"}); err == nil || !strings.Contains(err.Error(), "VAULT_TOKEN") {
		t.Fatalf("default runner without its token: %v", err)
	}

	for _, tt := range []struct{ from, to, want string }{
		{"requires: staging", "requires: qa", `requires "qa"`},
		{"pool: prod", "pool: gpu", `pool "gpu" is not defined`},
		{"        requires: staging\n", "", "soak without requires"},
		{"terraform: {path: /opt/tofu, version: 1.12.6, env: {TF_PLUGIN_CACHE_DIR: /var/cache/tofu}}", "terraform: {path: /opt/tofu}", "terraform needs both path and version"},
		{"env: {TF_PLUGIN_CACHE_DIR: /var/cache/tofu}", "env: {VAULT_TOKEN: x}", `project "network": terraform.env: "VAULT_TOKEN" cannot be set here`},
		{"workspace: blue", "workspace: ../blue", "workspace"},
		{"workspace: blue", "workspace: blue\n        lock_ttl: 80s",
			`environment "prod": lock_ttl 1m20s must be at least 3× runner.visibility_timeout (30s)`},
		{"runner: {embedded: false}", "runner: {embedded: false, visibility_timeout: 1m}",
			`environment "staging": lock_ttl 2m0s must be at least 3× runner.visibility_timeout (1m0s)`},
	} {
		_, err := Parse(strings.NewReader(strings.Replace(pipeline, tt.from, tt.to, 1)))
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s → %s: err = %v, want %q", tt.from, tt.to, err, tt.want)
		}
	}
}

func TestBreakGlass(t *testing.T) {
	withBG := func(bg string) string {
		return strings.Replace(minimal, "        vault: {apply: {role: staging-apply}}\n",
			"        vault: {apply: {role: staging-apply}}\n        breakglass: "+bg+"\n", 1)
	}
	c, err := Parse(strings.NewReader(withBG(`{oncall: {groups: [SONCALL]}, max_ttl: 1h, role: bg, policies: [staging-bg], channel: CSEC}`)))
	if err != nil {
		t.Fatal(err)
	}
	bg := c.Projects[0].Environments[0].BreakGlass
	if bg.ApprovalsNeeded() != 1 || bg.WrapTTL.D() != 5*time.Minute || bg.RemindEvery.D() != 24*time.Hour {
		t.Fatalf("break-glass defaults: %+v", bg)
	}
	_, err = Parse(strings.NewReader(withBG(`{approvals: 2, max_ttl: 10s, policies: [root], channel: "#security", wrap_ttl: 2h}`)))
	for _, want := range []string{"oncall: nobody", "max_ttl must be at least 1m", "approvals is 2", "role is required",
		`policies: "root" cannot be granted`, "wrap_ttl must be between", `channel: "#security"`} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("want %q in:\n%v", want, err)
		}
	}
	c, err = Parse(strings.NewReader(withBG(`{oncall: {users: [UERIN]}, approvals: 0, max_ttl: 1h, role: bg, policies: [p], channel: CSEC}`)))
	if err != nil || c.Projects[0].Environments[0].BreakGlass.ApprovalsNeeded() != 0 {
		t.Fatalf("self-service: %v", err)
	}
}

// Every secret can come from a file (NAME_FILE, or systemd's
// $CREDENTIALS_DIRECTORY/NAME) instead of the environment.
func TestSecretsFromFiles(t *testing.T) {
	c, err := Parse(strings.NewReader(minimal))
	if err != nil {
		t.Fatal(err)
	}
	dir, creds := t.TempDir(), t.TempDir()
	write := func(dir, name, v string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(v), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	write(creds, "SLACK_APP_TOKEN", "xapp-from-systemd")
	env := map[string]string{
		"SLACK_BOT_TOKEN_FILE":  write(dir, "bot", "xoxb-from-file\n"),
		"VAULT_TOKEN_FILE":      write(dir, "vault", "hvs.from-file"),
		"CREDENTIALS_DIRECTORY": creds,
		"TWOKEY_PLAN_KEY":       planKey,
	}
	s, err := c.LoadSecrets(func(k string) string { return env[k] }, c.ForServe())
	if err != nil {
		t.Fatal(err)
	}
	if s.SlackBotToken.Reveal() != "xoxb-from-file" || s.VaultToken.Reveal() != "hvs.from-file" || s.SlackAppToken.Reveal() != "xapp-from-systemd" {
		t.Fatalf("secrets = %q %q %q", s.SlackBotToken.Reveal(), s.VaultToken.Reveal(), s.SlackAppToken.Reveal())
	}
	// Both set, and a missing file, are reported with the rest.
	env["SLACK_BOT_TOKEN"] = "xoxb-env"
	env["VAULT_TOKEN_FILE"] = filepath.Join(dir, "missing")
	_, err = c.LoadSecrets(func(k string) string { return env[k] }, c.ForServe())
	for _, want := range []string{"both SLACK_BOT_TOKEN and SLACK_BOT_TOKEN_FILE", "VAULT_TOKEN_FILE"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v lacks %q", err, want)
		}
	}
}

// Nothing of twokey's own may be made visible to a sandboxed run.
func TestSandboxConfig(t *testing.T) {
	c, err := Parse(strings.NewReader(minimal))
	if err != nil {
		t.Fatal(err)
	}
	if c.Runner.Sandbox.Mode != SandboxAuto {
		t.Fatalf("default sandbox mode = %q, want auto", c.Runner.Sandbox.Mode)
	}
	bad := strings.Replace(minimal, "vault: {", "data_dir: /var/lib/twokey\nrunner:\n  sandbox:\n    mode: off\n"+
		"    writable: [/var/lib, relative/state, /var/lib/twokey/runs]\n    read_only: [/]\nvault: {", 1)
	_, err = Parse(strings.NewReader(bad))
	for _, want := range []string{`mode: "off"`, `writable: "/var/lib" overlaps data_dir`, `"relative/state" is not an absolute path`,
		`"/var/lib/twokey/runs" overlaps data_dir`, `read_only: "/" overlaps`} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
}
