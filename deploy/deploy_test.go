package deploy

import (
	"encoding/json"
	"os"
	"strings"
	"testing"
)

// The token roles have one definition, token-roles.json: roles.tf, which the
// README tells operators to apply, reads it and passes every field on, and
// the tests write the same file into a real Vault (devstack.ApplyDeploy).
// Every policy a role allows is one of the policies shipped beside it.
func TestTokenRolesHaveOneSource(t *testing.T) {
	var roles map[string]map[string]any
	b, err := Files.ReadFile("vault/token-roles.json")
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &roles); err != nil {
		t.Fatal(err)
	}
	tf, err := os.ReadFile("vault/roles.tf")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(tf), `jsondecode(file("${path.module}/token-roles.json"))`) {
		t.Fatal("roles.tf does not read token-roles.json")
	}
	for name, fields := range roles {
		for k := range fields {
			if !strings.Contains(string(tf), "= each.value."+k+"\n") {
				t.Errorf("roles.tf does not pass %s's field %s on", name, k)
			}
		}
		if fields["orphan"] != true || fields["renewable"] != false || fields["token_explicit_max_ttl"] == nil {
			t.Errorf("%s: tokens must be orphan, not renewable, and capped: %v", name, fields)
		}
		policies, _ := fields["allowed_policies"].([]any)
		if len(policies) == 0 {
			t.Errorf("%s allows no policy", name)
		}
		for _, p := range policies {
			if _, err := Files.ReadFile("vault/" + p.(string) + ".hcl"); err != nil {
				t.Errorf("%s allows policy %v, which deploy/vault does not ship", name, p)
			}
		}
	}
}
