package main

import (
	"strings"
	"testing"
	"time"

	"github.com/twokey/twokey/bot/slacksim"
)

// toldWithin is how long a person may wait to hear that the state store is
// unreachable: serve's Redis client gives up after its timeouts (2 s, one
// retry); this is the test's deadline, not a measurement.
const toldWithin = 20 * time.Second

// Redis stopped, or hung (SIGSTOP: connections open, nothing answers):
// `/tf plan` does nothing, and the person who typed it is told, by an
// ephemeral message about the state store, within seconds.
func TestRedisDownOrHungUserIsTold(t *testing.T) {
	for _, tt := range []struct {
		name  string
		fault func(s *stack) error
	}{
		{"down", func(s *stack) error { return s.redis.Stop() }},
		{"hung", func(s *stack) error {
			s.t.Cleanup(func() { _ = s.redis.Resume() })
			return s.redis.Pause()
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s := newStack(t)
			s.openPR(1, "web")
			s.startBot()
			// serve has used Redis: its pooled connections are open when the fault comes.
			s.slash(bob, "status staging")
			s.ephemeral(bob, "*infra/staging*: free")

			if err := tt.fault(s); err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			s.slash(alice, "plan staging pr-1") // acknowledged to Slack whatever Redis does
			const want = "state store (Redis) is unreachable, so nothing was done"
			if _, err := s.slack.Wait(toldWithin, func(msgs []slacksim.Message) bool {
				for _, m := range msgs {
					if m.Ephemeral && m.For == alice && strings.Contains(m.Content(), want) {
						return true
					}
				}
				return false
			}); err != nil {
				t.Fatalf("Redis %s: alice was not told within %v\nmessages:\n%s\nlogs:\n%s", tt.name, toldWithin, s.dump(), s.logs.String())
			}
			t.Logf("Redis %s: told %v after the command", tt.name, time.Since(start).Round(time.Millisecond))
			for _, m := range s.slack.Messages() {
				if !m.Ephemeral {
					t.Fatalf("a channel message was posted with Redis %s: %s", tt.name, m.Content())
				}
			}
		})
	}
}
