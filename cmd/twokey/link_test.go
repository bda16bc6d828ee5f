package main

import (
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/twokey/twokey/bot/slacksim"
	"github.com/twokey/twokey/config"
	"github.com/twokey/twokey/devstack/stacktest"
)

var deviceCodeRE = regexp.MustCompile(`enter the code \*([0-9A-F]{4}-[0-9A-F]{4})\*`)

// linkStack is a stack in which carol is not listed under identities: she
// links herself.
func linkStack(t *testing.T) *stack {
	t.Helper()
	s := newStack(t)
	cfg := s.baseConfig(filepath.Join(s.dir, "data"), stacktest.Tool(t, "terraform"))
	cfg.Identities = slices.DeleteFunc(cfg.Identities, func(id config.Identity) bool { return id.Slack == carol })
	s.config = s.write("link.yaml", cfg)
	return s
}

// deviceCode waits for the DM with user's GitHub code and returns the code.
func (s *stack) deviceCode(user string) string {
	s.t.Helper()
	m := s.dmTo(user, "https://github.example/login/device")
	code := deviceCodeRE.FindStringSubmatch(m.Content())
	if code == nil {
		s.t.Fatalf("no code in %q", m.Content())
	}
	return code[1]
}

// deviceCode2 is the code of user's second link attempt.
func (s *stack) deviceCode2(user string) string {
	s.t.Helper()
	var codes []string
	if _, err := s.slack.Wait(waitFor, func(msgs []slacksim.Message) bool {
		codes = nil
		for _, m := range msgs {
			if c := deviceCodeRE.FindStringSubmatch(m.Content()); c != nil && m.Channel == "D"+strings.TrimPrefix(user, "U") {
				codes = append(codes, c[1])
			}
		}
		return len(codes) >= 2
	}); err != nil {
		s.t.Fatalf("no second code for %s\n%s", user, s.dump())
	}
	return codes[1]
}

// /tf link github: the code and URL by DM, GitHub's device flow, the link
// stored (whoami shows it, the audit record has it) and the token
// dropped; then the linked approver counts, where unlinked she was refused.
func TestLinkGitHub(t *testing.T) {
	s := linkStack(t)
	s.openPR(8, "web")
	s.startBot()

	s.slash(alice, "plan staging pr-8")
	msg := s.planMessage(8, "Plan ready for review")
	s.click(carol, msg, approve)
	s.ephemeral(carol, "`/tf link github`")

	s.slash(carol, "link github")
	code := s.deviceCode(carol)
	if !s.gh.AuthorizeDevice(code, "carol-gh") {
		t.Fatalf("ghsim knows no code %s", code)
	}
	s.dmTo(carol, "Linked to GitHub *carol-gh* (account 1003)")
	s.slash(carol, "whoami")
	s.ephemeral(carol, "You are GitHub *carol-gh* (account 1003), linked with `/tf link github`")
	if n := s.gh.UserTokensIssued(); n != 1 {
		t.Fatalf("%d user tokens issued", n)
	}
	for _, r := range s.gh.Requests() {
		if r.Path == "/api/v3/user" && r.Auth == "Bearer "+githubToken {
			t.Error("GET /user was made with the bot's own token")
		}
	}
	// Once linked, she cannot switch to another account herself (an author
	// could otherwise re-link right before approving).
	s.slash(carol, "link github")
	s.ephemeral(carol, "You are already GitHub *carol-gh* (account 1003). To link another account, ask a twokey admin")

	s.click(carol, msg, approve)
	msg = s.planMessage(8, "Approved by <@"+carol+"> — 1 more needed")
	s.click(bob, msg, approve)
	s.planMessage(8, "Applied")

	// An admin unlinks her; she is unlinked again.
	s.slash(erin, "unlink <@"+carol+"|carol>")
	s.ephemeral(erin, "<@"+carol+">'s GitHub link is gone")
	s.slash(carol, "whoami")
	s.ephemeral(carol, "You have no linked GitHub account")
	s.slash(bob, "unlink <@"+carol+">")
	s.ephemeral(bob, "only twokey admins may unlink")
}

// A code nobody enters expires, and a denied authorization links nothing;
// each is said by DM.
func TestLinkGitHubExpiryAndDenial(t *testing.T) {
	s := linkStack(t)
	s.gh.SetDeviceExpiry(2 * time.Second)
	s.startBot()

	s.slash(carol, "link github")
	s.deviceCode(carol)
	s.dmTo(carol, "The GitHub code expired before it was entered; nothing was linked")

	s.gh.SetDeviceExpiry(time.Minute)
	s.slash(carol, "link github")
	code := s.deviceCode2(carol)
	s.gh.DenyDevice(code)
	s.dmTo(carol, "The GitHub authorization was denied; nothing was linked")

	s.slash(carol, "whoami")
	s.ephemeral(carol, "You have no linked GitHub account")
	if n := s.gh.UserTokensIssued(); n != 0 {
		t.Fatalf("%d user tokens issued", n)
	}
}
