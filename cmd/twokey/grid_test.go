package main

import (
	"path/filepath"
	"testing"

	"github.com/twokey/twokey/bot/slacksim"
	"github.com/twokey/twokey/config"
	"github.com/twokey/twokey/devstack/stacktest"
)

// On Enterprise Grid a click's user.team_id is the organization (E…): a
// member of the configured organization counts as an approver, and a user
// of another organization (in a shared channel, say) is refused.
func TestEnterpriseGridClicks(t *testing.T) {
	const (
		org   = "E0ACME"
		frank = "UFRANK"  // an organization-level approver of E0ACME
		oscar = "UOSCAR"  // of another organization, in the approver group by mistake
		other = "E0OTHER" // another organization
	)
	s := newStack(t, func(sc *stackConfig) { sc.enterprise = org })
	s.slack.AddUser(slacksim.User{ID: frank, Name: "frank", TeamID: org})
	s.slack.AddUser(slacksim.User{ID: oscar, Name: "oscar", TeamID: other, Enterprise: other})
	s.slack.SetGroup(group, bob, frank, oscar)
	cfg := s.baseConfig(filepath.Join(s.dir, "data"), stacktest.Tool(t, "terraform"))
	cfg.Identities = append(cfg.Identities,
		config.Identity{Slack: frank, GitHub: "frank-gh", GitHubID: 2001},
		config.Identity{Slack: oscar, GitHub: "oscar-gh", GitHubID: 2002})
	s.config = s.write("grid.yaml", cfg)
	s.openPR(6, "web")
	s.startBot()

	s.slash(alice, "plan staging pr-6")
	msg := s.planMessage(6, "Plan ready for review")
	s.click(oscar, msg, approve)
	s.ephemeral(oscar, "workspace")
	s.click(frank, msg, approve)
	msg = s.planMessage(6, "Approved by <@"+frank+"> — 1 more needed")
	if s.applied("web") {
		t.Fatal("applied with one approval")
	}
	s.click(bob, msg, approve)
	s.planMessage(6, "Applied")
}
