package main

import (
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/twokey/twokey/bot/slacksim"
	"github.com/twokey/twokey/devstack/stacktest"
)

// A `/tf plan` in a channel the environment allows but twokey was never
// invited to: Slack refuses the plan message (not_in_channel), so the user
// is told through the command's response_url how to invite twokey; nothing
// is planned and the environment is not left locked.
func TestPlanWhereTwokeyIsNotInvited(t *testing.T) {
	const outside = "COUTSIDE"
	s := newStack(t)
	s.slack.AddChannelWithoutBot(outside, "ops")
	cfg := s.baseConfig(filepath.Join(s.dir, "data"), stacktest.Tool(t, "terraform"))
	staging := &cfg.Projects[0].Environments[0]
	staging.Channels = append(staging.Channels, outside)
	s.config = s.write("twokey.yaml", cfg)
	s.openPR(1, "web")
	s.startBot()

	slashIn := func(where, user, text string) {
		t.Helper()
		id, err := s.slack.SlashCommand(user, where, text)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.slack.WaitAcked(id, 5*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	slashIn(outside, alice, "plan staging pr-1")
	told := s.ephemeral(alice, "invite it with `/invite @twokey` and run the command again")
	if told.Channel != outside || !strings.Contains(told.Content(), "<#"+outside+">") {
		t.Errorf("the invitation is in %s, naming %q; want it in %s, naming <#%s>", told.Channel, told.Content(), outside, outside)
	}
	if !slices.ContainsFunc(s.slack.Calls(), func(c slacksim.Call) bool {
		return c.Method == "response_url" && c.Error == "" && c.Params["channel"] == outside
	}) {
		t.Error("the answer did not come through the command's response_url")
	}

	// Nothing was planned, and the lock is free.
	for _, m := range s.slack.Messages() {
		if !m.Ephemeral {
			t.Errorf("a message was posted:\n%s", m.Content())
		}
	}
	s.slash(bob, "status staging")
	s.ephemeral(bob, "infra/staging*: free")

	// Other answers there come through the response_url too.
	slashIn(outside, alice, "help")
	s.ephemeral(alice, "/tf plan")
	if strings.Contains(s.logs.String(), "/response/") {
		t.Errorf("a response_url (a bearer URL) is in the logs:\n%s", s.logs.String())
	}

	// From the channel twokey is in, planning works at once.
	s.slash(alice, "plan staging pr-1")
	msg := s.planMessage(1, "Plan ready for review")
	if msg.Channel != channel {
		t.Errorf("plan posted in %s", msg.Channel)
	}
}
