package config

import (
	"strings"
	"testing"
)

const pooled = `
vault: {address: "http://127.0.0.1:8200"}
terraform: {version: 1.12.2}
runner: {embedded: false}
pools:
  - name: prod
    vault_auth: {method: approle}
projects:
  - name: infra
    repo: acme/infra
    environments:
      - name: prod
        pool: prod
        approvers: {users: [UAPPROVE1]}
        vault: {apply: {role: prod-apply}}
`

const planKey = "a2tra2tra2tra2tra2tra2tra2tra2tra2tra2tra2s="

// A process that runs plans seals them with the plan key; without it, it
// would seal them with a key of its own, and no other replica or worker, nor
// itself after a restart, could apply them. serve without an embedded runner
// seals nothing and needs none.
func TestPlanKeyNeededWherePlansRun(t *testing.T) {
	embedded, err := Parse(strings.NewReader(minimal))
	if err != nil {
		t.Fatal(err)
	}
	pools, err := Parse(strings.NewReader(pooled))
	if err != nil {
		t.Fatal(err)
	}
	serveEnv := map[string]string{"SLACK_BOT_TOKEN": "b", "SLACK_APP_TOKEN": "a", "VAULT_TOKEN": "v"}
	prodEnv := map[string]string{"VAULT_PROD_ROLE_ID": "r", "VAULT_PROD_SECRET_ID": "s"}
	with := func(env map[string]string, k, v string) func(string) string {
		return func(name string) string {
			if name == k {
				return v
			}
			return env[name]
		}
	}
	for _, tt := range []struct {
		name   string
		c      *Config
		n      Needs
		getenv func(string) string
		want   []string // "" : no error
	}{
		{"embedded serve without a key", embedded, embedded.ForServe(), with(serveEnv, "", ""), []string{"TWOKEY_PLAN_KEY is not set"}},
		{"embedded serve with a key", embedded, embedded.ForServe(), with(serveEnv, "TWOKEY_PLAN_KEY", planKey), nil},
		{"serve of runner pools", pools, pools.ForServe(), with(serveEnv, "", ""), nil},
		{"prod runner without a key", pools, Needs{Vault: true, Pool: "prod"}, with(prodEnv, "", ""),
			[]string{"TWOKEY_PLAN_KEY_PROD", "TWOKEY_PLAN_KEY"}},
		{"prod runner with the pool's key", pools, Needs{Vault: true, Pool: "prod"}, with(prodEnv, "TWOKEY_PLAN_KEY_PROD", planKey), nil},
		{"prod runner with the shared key", pools, Needs{Vault: true, Pool: "prod"}, with(prodEnv, "TWOKEY_PLAN_KEY", planKey), nil},
		{"audit reader", pools, Needs{}, with(nil, "", ""), nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := tt.c.LoadSecrets(tt.getenv, tt.n)
			if len(tt.want) == 0 && err != nil {
				t.Fatalf("unexpected error: %v", err)
			}
			for _, w := range tt.want {
				if err == nil || !strings.Contains(err.Error(), w) {
					t.Errorf("error %v lacks %q", err, w)
				}
			}
		})
	}
}

// A pool the config does not have is reported with the other problems, not
// instead of them; and a secret read from a missing file is reported once.
func TestLoadSecretsLosesNothing(t *testing.T) {
	c, err := Parse(strings.NewReader(pooled))
	if err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"TWOKEY_PLAN_KEY_GPU_FILE": "/nonexistent/plan-key", "REDIS_PASSWORD_FILE": "/nonexistent/redis"}
	c.Redis.PasswordEnv = "REDIS_PASSWORD"
	_, err = c.LoadSecrets(func(k string) string { return env[k] }, Needs{Vault: true, Pool: "gpu"})
	msg := ""
	if err != nil {
		msg = err.Error()
	}
	for _, want := range []string{`no pool "gpu"`, "REDIS_PASSWORD_FILE", "TWOKEY_PLAN_KEY_GPU_FILE"} {
		if !strings.Contains(msg, want) {
			t.Errorf("error lacks %q:\n%s", want, msg)
		}
	}
	if n := strings.Count(msg, "TWOKEY_PLAN_KEY_GPU_FILE"); n != 1 {
		t.Errorf("the missing plan key file is reported %d times:\n%s", n, msg)
	}
}
