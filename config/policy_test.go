package config

import (
	"strings"
	"testing"
)

const withPolicy = `
vault: {address: "http://127.0.0.1:8200"}
terraform: {version: 1.12.2}
projects:
  - name: infra
    repo: acme/infra
    policy:
      dir: /etc/twokey/policies
      owners: {groups: [S0SECURITY]}
    environments:
      - name: staging
        approvers: {users: [UAPPROVE1]}
        vault: {apply: {role: staging-apply}}
      - name: prod
        approvers: {users: [UAPPROVE1]}
        vault: {apply: {role: prod-apply}}
        policy:
          dir: /etc/twokey/policies-prod
          owners: {users: [UOWNER1]}
`

func TestPolicyPerProjectAndEnvironment(t *testing.T) {
	c, err := Parse(strings.NewReader(withPolicy))
	if err != nil {
		t.Fatal(err)
	}
	p := &c.Projects[0]
	staging, prod := p.PolicyFor(p.Env("staging")), p.PolicyFor(p.Env("prod"))
	if staging.Dir != "/etc/twokey/policies" || len(staging.Owners.Groups) != 1 {
		t.Errorf("staging policy = %+v", staging)
	}
	if prod.Dir != "/etc/twokey/policies-prod" || len(prod.Owners.Users) != 1 {
		t.Errorf("prod policy = %+v", prod)
	}
	c2, err := Parse(strings.NewReader(minimal))
	if err != nil {
		t.Fatal(err)
	}
	if pol := c2.Projects[0].PolicyFor(&c2.Projects[0].Environments[0]); pol != nil {
		t.Errorf("no policy configured, got %+v", pol)
	}
}

func TestPolicyDirMustBeTheHosts(t *testing.T) {
	_, err := Parse(strings.NewReader(strings.Replace(withPolicy, "dir: /etc/twokey/policies-prod", "dir: policies", 1)))
	if err == nil || !strings.Contains(err.Error(), `environment "prod": policy: dir "policies" must be an absolute path`) {
		t.Fatalf("err = %v", err)
	}
}
