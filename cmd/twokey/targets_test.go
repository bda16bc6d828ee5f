package main

import (
	"strings"
	"testing"

	"github.com/twokey/twokey/config"
)

// TestTargetTerraformEnv: a project's terraform.env reaches its runs, over
// the top-level one (it used to be accepted and ignored).
func TestTargetTerraformEnv(t *testing.T) {
	cfg, err := config.Parse(strings.NewReader(`
slack: {team_id: T1}
github: {}
vault: {address: "http://127.0.0.1:8200"}
terraform: {version: 1.12.2, env: {HTTPS_PROXY: "http://proxy:3128", TF_PLUGIN_CACHE_DIR: /global}}
projects:
  - name: infra
    repo: acme/infra
    terraform: {path: /opt/tofu, version: 1.12.6, env: {TF_PLUGIN_CACHE_DIR: /tofu}}
    environments:
      - name: staging
        approvers: {users: [UAPPROVE1]}
        vault: {apply: {role: r}}
`))
	if err != nil {
		t.Fatal(err)
	}
	tg, err := targets(cfg)("infra", "staging")
	if err != nil {
		t.Fatal(err)
	}
	if tg.Binary != "/opt/tofu" || tg.TerraformEnv["TF_PLUGIN_CACHE_DIR"] != "/tofu" || tg.TerraformEnv["HTTPS_PROXY"] != "http://proxy:3128" {
		t.Fatalf("target = %+v", tg)
	}
}
