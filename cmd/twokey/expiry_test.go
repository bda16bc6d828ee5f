package main

import (
	"strings"
	"testing"
	"time"

	"github.com/twokey/twokey/bot/slacksim"
)

// Click-time and status-time expiry, with the sweeper out of the way (it
// runs once an hour here): the click or the status command that finds a
// plan past plan_ttl expires it itself.
func TestExpiryAtClickAndStatus(t *testing.T) {
	for _, tt := range []struct {
		name string
		find func(s *stack, msg slacksim.Message)
	}{
		{"click", func(s *stack, msg slacksim.Message) {
			s.click(bob, msg, approve)
			s.ephemeral(bob, "This plan has expired; run `/tf plan` again.")
		}},
		{"status", func(s *stack, msg slacksim.Message) {
			s.slash(bob, "status staging")
			s.ephemeral(bob, "*infra/staging*: free")
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s := newStack(t, func(c *stackConfig) { c.planTTL = "2s" })
			s.openPR(1, "web")
			s.startBot("--sweep-interval=1h")

			s.slash(alice, "plan staging pr-1")
			msg := s.planMessage(1, "Plan ready for review")
			time.Sleep(3 * time.Second) // past plan_ttl; nothing sweeps
			if m := s.waitTS(msg.TS, "Plan ready for review"); len(m.Buttons()) == 0 {
				t.Fatal("the plan was expired before anything looked at it: the sweeper is not out of the way")
			}

			tt.find(s, msg)
			expired := s.waitTS(msg.TS, "expired at")
			if len(expired.Buttons()) != 0 {
				t.Errorf("the expired plan still offers buttons:\n%s", expired.Content())
			}
			s.slash(carol, "status staging")
			status := s.ephemeral(carol, "*infra/staging*")
			if !strings.Contains(status.Content(), "*infra/staging*: free") {
				t.Errorf("status after expiry shows the plan open:\n%s", status.Content())
			}
			// A stale client's later approval is refused too, and nothing was applied.
			if _, err := s.slack.ClickStale(carol, channel, msg.TS, approve, msg.Buttons()[0].Value); err != nil {
				t.Fatal(err)
			}
			s.ephemeral(carol, "This plan is void; nothing was changed.")
			if s.applied("web") {
				t.Fatal("an expired plan was applied")
			}
		})
	}
}
