package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/twokey/twokey/config"
	"github.com/twokey/twokey/devstack/stacktest"
)

const override = "twokey_override"

// e2ePolicy is staging's policy in the policy tests: a resource named
// forbidden_* is denied, warned_* warned about, big_* needs three approvals
// with one from security, and dba_* an approval from a group the config
// does not define.
const e2ePolicy = `package twokey.e2e

deny contains msg if {
	some rc in input.resource_changes
	startswith(rc.name, "forbidden")
	msg := sprintf("%s is forbidden here", [rc.address])
}

warn contains msg if {
	some rc in input.resource_changes
	startswith(rc.name, "warned")
	msg := sprintf("%s deserves a second look", [rc.address])
}

big if {
	some rc in input.resource_changes
	startswith(rc.name, "big")
}

required_approvals := {"approvals": 3, "msg": "a big change"} if big

required_groups contains {"group": "security", "msg": "a big change"} if big

required_groups contains "dba" if {
	some rc in input.resource_changes
	startswith(rc.name, "dba")
}
`

// policyStack is a stack whose staging plans are checked against
// e2ePolicy; erin owns the policy and is the security group.
func policyStack(t *testing.T) *stack {
	s := newStack(t)
	dir := stacktest.Dir(t)
	if err := os.WriteFile(filepath.Join(dir, "e2e.rego"), []byte(e2ePolicy), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := s.baseConfig(filepath.Join(s.dir, "data"), stacktest.Tool(t, "terraform"))
	cfg.Projects[0].Environments[0].Policy = &config.Policy{Dir: dir, Owners: config.Who{Users: []string{erin}},
		Groups: map[string]config.Who{"security": {Users: []string{erin}}}}
	s.config = s.write("twokey.yaml", cfg)
	return s
}

// A denied plan takes no approvals until a policy owner overrides the
// denial — not an approver, not the requester — and the override is in the
// thread; then it needs its two approvals as any plan does. Through Slack,
// on real Redis, Vault and terraform.
func TestPolicyDenialAndOverride(t *testing.T) {
	s := policyStack(t)
	s.openPR(1, "forbidden_db", "warned_cache")
	s.startBot()

	s.slash(alice, "plan staging pr-1")
	msg := s.planMessage(1, "Policy denied")
	for _, want := range []string{"terraform_data.forbidden_db is forbidden here", "Needs an override by a policy owner"} {
		if !strings.Contains(msg.Content(), want) {
			t.Errorf("plan message lacks %q:\n%s", want, msg.Content())
		}
	}
	if b := msg.Buttons(); len(b) != 3 || b[2].ActionID != override {
		t.Fatalf("buttons = %+v, want Approve, Reject, Override policy", b)
	}
	s.thread(msg, "deny `twokey.e2e.deny`: terraform_data.forbidden_db is forbidden here")
	s.thread(msg, "warn `twokey.e2e.warn`: terraform_data.warned_cache deserves a second look")

	s.click(bob, msg, approve)
	s.ephemeral(bob, "Policy denied this plan")
	s.click(carol, msg, override)
	s.ephemeral(carol, "not a policy owner")
	s.click(alice, msg, override)
	s.ephemeral(alice, "You asked for this plan")
	if strings.Contains(s.planMessage(1, "Policy denied").Content(), "Approved by") {
		t.Fatal("an approval counted on a denied plan")
	}

	s.click(erin, msg, override)
	s.thread(msg, "overrode the policy denial (twokey.e2e.deny)")
	msg = s.planMessage(1, "Overridden by <@"+erin+">")
	if len(msg.Buttons()) != 2 {
		t.Errorf("the Override button is still there after the override: %+v", msg.Buttons())
	}
	s.click(bob, msg, approve)
	msg = s.planMessage(1, "1 more needed")
	if s.applied("forbidden_db") {
		t.Fatal("applied with one approval after the override")
	}
	s.click(carol, msg, approve)
	s.planMessage(1, "Applied")
	if !s.applied("forbidden_db") {
		t.Fatal("not applied after the override and two approvals")
	}
}

// A plan whose policy raises the quorum to three with one from security is
// not applied on two approvals, nor on three without security; then a
// plan needing a group the config does not define fails, saying so.
func TestPolicyRaisesTheQuorum(t *testing.T) {
	s := policyStack(t)
	s.openPR(1, "big_cluster")
	s.openPR(2, "dba_schema")
	s.startBot()

	s.slash(alice, "plan staging pr-1")
	msg := s.planMessage(1, "Needs* 3 approvals (raised by policy), one from *security* (a big change)")
	if b := msg.Buttons(); len(b) != 2 {
		t.Fatalf("buttons = %+v, want Approve and Reject", b)
	}
	s.click(bob, msg, approve)
	s.click(carol, msg, approve)
	msg = s.planMessage(1, "needs 1 more approval, an approval from security")
	if s.applied("big_cluster") {
		t.Fatal("applied on two of three approvals")
	}
	s.click(erin, msg, approve)
	s.planMessage(1, "Applied")
	if !s.applied("big_cluster") {
		t.Fatal("not applied with three approvals, one from security")
	}

	s.slash(alice, "plan staging pr-2")
	s.planMessage(2, "policy requires an approval from a group twokey does not know")
	s.ephemeral(alice, "dba (add it under policy.groups)")
}
