package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/twokey/twokey/bot/slacksim"
	"github.com/twokey/twokey/runner/redislock"
)

// Promise 1: re-planning the same PR voids the pending plan's approvals;
// the old message says so and loses its buttons.
func TestReplanVoidsApprovals(t *testing.T) {
	s := newStack(t)
	s.openPR(1, "web")
	s.startBot()

	s.slash(alice, "plan staging pr-1")
	old := s.planMessage(1, "Plan ready for review")
	oldPlan := old.Buttons()[0].Value
	s.click(bob, old, approve)
	s.planMessage(1, "1 more needed")

	s.openPR(1, "web", "cache") // a new commit on the PR
	s.slash(alice, "plan staging pr-1")
	void := s.waitTS(old.TS, "replaced by a new plan")
	if len(void.Buttons()) != 0 {
		t.Fatal("the replaced plan still has buttons")
	}
	s.thread(old, "its approvals no longer count")
	fresh := s.planMessage(1, "Needs 2 approvals")
	if fresh.TS == old.TS || !strings.Contains(fresh.Content(), "terraform_data.cache") {
		t.Fatalf("no new plan message with the new commit:\n%s", fresh.Content())
	}
	// bob's approval was for the old plan: carol's alone is not enough.
	s.click(carol, fresh, approve)
	s.waitTS(fresh.TS, "1 more needed")
	// A stale client can still send the old button: it is refused.
	if _, err := s.slack.ClickStale(erin, channel, old.TS, approve, oldPlan); err != nil {
		t.Fatal(err)
	}
	s.ephemeral(erin, "This plan is void")
	if s.applied("web") {
		t.Fatal("applied")
	}
}

// Promise 1: the PR's head is read again before apply; if it moved, nothing
// is applied and the thread says why.
func TestNewCommitBeforeApplyInvalidates(t *testing.T) {
	s := newStack(t)
	s.openPR(1, "web")
	s.startBot()

	s.slash(alice, "plan staging pr-1")
	msg := s.planMessage(1, "Plan ready for review")
	s.click(bob, msg, approve)
	s.planMessage(1, "1 more needed")
	moved := s.openPR(1, "web", "evil")
	s.click(carol, msg, approve)
	s.thread(msg, "PR #1 moved to "+moved[:7])
	s.waitTS(msg.TS, "Void")
	if s.applied("web") || s.applied("evil") {
		t.Fatal("applied after the PR moved")
	}
	s.slash(bob, "status staging")
	s.ephemeral(bob, "*infra/staging*: free")
}

// Promise 2: a plan past its TTL is voided by the sweeper, its lock freed,
// its message updated; the message said when it would expire.
func TestPlanExpires(t *testing.T) {
	s := newStack(t, func(c *stackConfig) { c.planTTL = "2s" })
	s.openPR(1, "web")
	s.openPR(2, "db")
	s.startBot("--sweep-interval=100ms")

	s.slash(alice, "plan staging pr-1")
	msg := s.planMessage(1, "Plan ready for review")
	if !strings.Contains(msg.Content(), "expires") {
		t.Error("the message does not say when the plan expires")
	}
	s.waitTS(msg.TS, "expired at")
	s.slash(bob, "plan staging pr-2")
	s.planMessage(2, "Plan ready for review")
}

// Promise 3: admins can free a stuck lock, with a reason everyone sees.
func TestUnlock(t *testing.T) {
	s := newStack(t)
	s.openPR(1, "web")
	s.openPR(2, "db")
	s.startBot()

	s.slash(alice, "plan staging pr-1")
	msg := s.planMessage(1, "Plan ready for review")
	s.slash(dave, "unlock staging it is stuck")
	s.ephemeral(dave, "only twokey admins may unlock")
	s.slash(erin, `unlock infra/staging "alice is on holiday"`)
	notice := s.visible("unlocked *infra/staging*")
	for _, want := range []string{"<@" + erin + ">", "held by <@" + alice + "> for PR #1", "fence 1", "alice is on holiday"} {
		if !strings.Contains(notice.Content(), want) {
			t.Errorf("unlock notice lacks %q: %s", want, notice.Content())
		}
	}
	void := s.waitTS(msg.TS, "unlocked by <@"+erin+">")
	if len(void.Buttons()) != 0 {
		t.Error("the unlocked plan still has buttons")
	}
	s.slash(bob, "plan staging pr-2")
	s.planMessage(2, "Plan ready for review")
}

// Promise 7: Redis down means no plan starts, and the user is told within
// seconds.
func TestRedisDownFailsClosed(t *testing.T) {
	s := newStack(t)
	s.openPR(1, "web")
	s.startBot()
	if err := s.redis.Stop(); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	s.slash(alice, "plan staging pr-1")
	s.ephemeral(alice, "state store (Redis) is unreachable, so nothing was done")
	t.Logf("told %v after the command", time.Since(start).Round(time.Millisecond))
	for _, m := range s.slack.Messages() {
		if !m.Ephemeral {
			t.Fatalf("a plan message was posted with Redis down: %s", m.Content())
		}
	}
}

// Promise 7: GitHub down means no plan, and no apply, because the head SHA
// cannot be confirmed; the plan stays pending and applies once GitHub is back.
func TestGitHubDownFailsClosed(t *testing.T) {
	s := newStack(t)
	s.openPR(1, "web")
	s.startBot()

	s.gh.Fail(1000)
	s.slash(alice, "plan staging pr-1")
	s.ephemeral(alice, "GitHub could not be reached")
	s.gh.Fail(0)

	s.slash(alice, "plan staging pr-1")
	msg := s.planMessage(1, "Plan ready for review")
	s.click(bob, msg, approve)
	s.planMessage(1, "1 more needed")
	s.gh.Fail(1000)
	s.click(carol, msg, approve)
	s.ephemeral(carol, "GitHub could not be reached")
	pending := s.waitTS(msg.TS, "Approved by <@"+bob+">, <@"+carol+">")
	if len(pending.Buttons()) != 2 || s.applied("web") {
		t.Fatal("not pending, or applied without confirming the head commit")
	}
	s.gh.Fail(0)
	s.click(carol, msg, approve) // retry
	s.waitTS(msg.TS, "Applied")
}

// Promise 4: redelivered envelopes and double-clicks do nothing twice.
func TestRedeliveryActsOnce(t *testing.T) {
	s := newStack(t)
	s.openPR(1, "web")
	s.startBot()

	id, err := s.slack.SlashCommand(alice, channel, "plan staging pr-1")
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if err := s.slack.Redeliver(id, "timeout"); err != nil {
			t.Fatal(err)
		}
	}
	msg := s.planMessage(1, "Plan ready for review")
	// bob double-clicks; Slack also redelivers one of the clicks.
	first, _ := s.slack.Click(bob, channel, msg.TS, approve)
	_, _ = s.slack.Click(bob, channel, msg.TS, approve)
	_ = s.slack.Redeliver(first, "timeout")
	s.planMessage(1, "1 more needed")
	time.Sleep(500 * time.Millisecond)
	plans := 0
	for _, m := range s.slack.Messages() {
		if !m.Ephemeral && m.ThreadTS == "" {
			plans++
		}
		if m.Ephemeral {
			t.Errorf("a duplicate delivery produced a message: %s", m.Content())
		}
	}
	if plans != 1 {
		t.Fatalf("%d plan messages for one command", plans)
	}
}

// The socket drops mid-flow: the bot reconnects, and an approval whose ack
// was lost is redelivered on the new socket and counted once.
func TestSocketDropMidFlow(t *testing.T) {
	s := newStack(t)
	s.openPR(1, "web")
	s.startBot()

	s.slash(alice, "plan staging pr-1")
	msg := s.planMessage(1, "Plan ready for review")

	s.slack.Disconnect() // Slack asks for a reconnect
	if err := s.slack.WaitConnected(1, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	s.click(bob, msg, approve)
	s.planMessage(1, "1 more needed")

	id, err := s.slack.Click(carol, channel, msg.TS, approve)
	if err != nil {
		t.Fatal(err)
	}
	s.slack.Drop() // the network fails; the ack may or may not have made it
	if err := s.slack.WaitConnected(1, 30*time.Second); err != nil {
		t.Fatalf("bot did not reconnect: %v", err)
	}
	if !s.slack.Acked(id) {
		if err := s.slack.Redeliver(id, "timeout"); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.slack.Redeliver(id, "timeout"); err != nil { // and once more for good measure
		t.Fatal(err)
	}
	done := s.planMessage(1, "Applied")
	if !strings.Contains(done.Content(), "Approved by <@"+bob+">, <@"+carol+">.") {
		t.Fatalf("approvals lost or doubled:\n%s", done.Content())
	}
}

// waitTS waits until the message at ts contains want.
func (s *stack) waitTS(ts, want string) slacksim.Message {
	s.t.Helper()
	var found slacksim.Message
	_, err := s.slack.Wait(waitFor, func(msgs []slacksim.Message) bool {
		for _, m := range msgs {
			if m.TS == ts && strings.Contains(m.Content(), want) {
				found = m
				return true
			}
		}
		return false
	})
	if err != nil {
		s.t.Fatalf("message %s never contained %q\nmessages:\n%s\nlogs:\n%s", ts, want, s.dump(), s.logs.String())
	}
	return found
}

// visible waits for a channel message (not ephemeral, not in a thread) containing want.
func (s *stack) visible(want string) slacksim.Message {
	s.t.Helper()
	var found slacksim.Message
	_, err := s.slack.Wait(waitFor, func(msgs []slacksim.Message) bool {
		for _, m := range msgs {
			if !m.Ephemeral && m.ThreadTS == "" && strings.Contains(m.Content(), want) {
				found = m
				return true
			}
		}
		return false
	})
	if err != nil {
		s.t.Fatalf("no channel message containing %q\nmessages:\n%s", want, s.dump())
	}
	return found
}

// Promise 6: a bot killed (SIGKILL) mid-apply. Its lock frees by lease,
// its Vault token dies by TTL, and the plan is marked interrupted by the
// bots that remain — never applied again.
func TestBotKilledMidApply(t *testing.T) {
	const lockTTL, tokenTTL = 2 * time.Second, 10 * time.Second
	s := newStack(t, func(c *stackConfig) { c.lockTTL, c.applyTimeout, c.applyTokenTTL = "2s", "10s", "10s" })
	// The provisioner also starts a process of its own that tries to
	// outlive the apply and finish a side effect later.
	survivor := filepath.Join(s.out, "survivor")
	s.provision = fmt.Sprintf(" && (setsid sh -c 'exec 9>>%s; sleep 30; touch %s.done' </dev/null >/dev/null 2>&1 &) && sleep 20", survivor, survivor)
	s.openPR(1, "slow")
	bot := s.startBotProcess(s.config)

	s.slash(alice, "plan staging pr-1")
	msg := s.planMessage(1, "Plan ready for review")
	s.click(bob, msg, approve)
	s.click(carol, msg, approve)
	for deadline := time.Now().Add(waitFor); ; time.Sleep(20 * time.Millisecond) {
		if _, err := os.Stat(s.envDump()); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("apply never started")
		}
	}
	time.Sleep(100 * time.Millisecond) // let the provisioner finish writing
	env, _ := os.ReadFile(s.envDump())
	childToken := envValue(string(env), "VAULT_TOKEN")
	if childToken == "" {
		t.Fatal("no child token in terraform's environment")
	}

	if len(holdersOf(t, survivor)) == 0 {
		t.Fatal("the provisioner's own process did not start")
	}
	bot.kill()
	killed := time.Now()
	// Every process of the apply dies with the bot: nothing finishes a
	// side effect after the lock is free.
	for len(holdersOf(t, survivor)) > 0 {
		if time.Since(killed) > 5*time.Second {
			t.Fatalf("processes of the apply outlived the killed bot: %v", holdersOf(t, survivor))
		}
		time.Sleep(20 * time.Millisecond)
	}
	rdb := redis.NewClient(&redis.Options{Addr: s.redis.Addr})
	defer rdb.Close()
	locks := redislock.New(rdb, keyPrefix)
	for {
		if _, held, err := locks.Holder(context.Background(), "infra/staging"); err == nil && !held {
			break
		}
		if time.Since(killed) > lockTTL+time.Second {
			t.Fatalf("lock still held %v after the kill (lease %v)", time.Since(killed), lockTTL)
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("lock free %v after SIGKILL (lease %v)", time.Since(killed).Round(time.Millisecond), lockTTL)
	root, _ := s.vault.Client()
	for {
		if _, err := root.Auth().Token().Lookup(childToken); err != nil {
			break
		}
		if time.Since(killed) > tokenTTL+2*time.Second {
			t.Fatalf("child token alive %v after the kill (TTL %v)", time.Since(killed), tokenTTL)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("child token gone %v after SIGKILL (TTL %v)", time.Since(killed).Round(time.Millisecond), tokenTTL)

	_ = os.Remove(s.envDump())
	s.startBot("--sweep-interval=200ms")
	done := s.waitTS(msg.TS, "Interrupted")
	if len(done.Buttons()) != 0 || !strings.Contains(done.Content(), "will not be retried") {
		t.Fatalf("interrupted plan:\n%s", done.Content())
	}
	time.Sleep(time.Second)
	if _, err := os.Stat(s.envDump()); err == nil {
		t.Fatal("the interrupted apply ran again")
	}
}
