package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/twokey/twokey/audit"
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
	planID := msg.Buttons()[0].Value
	// bob double-clicks; Slack also redelivers one of the clicks.
	first, err := s.slack.Click(bob, channel, msg.TS, approve)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.slack.Click(bob, channel, msg.TS, approve); err != nil {
		t.Fatal(err)
	}
	if err := s.slack.Redeliver(first, "timeout"); err != nil {
		t.Fatal(err)
	}
	s.planMessage(1, "1 more needed")
	// Each duplicate has been handled, and handling a duplicate ends there:
	// the three redelivered commands, the redelivered click, and whichever
	// of bob's two clicks came second. Nothing can post after this.
	s.waitLog(3, "duplicate delivery ignored", "key=envelope:"+id+" ")
	s.waitLog(1, "duplicate delivery ignored", "key=envelope:"+first+" ")
	s.waitLog(1, "duplicate delivery ignored", "key=click:"+planID+":approve:"+bob+":")
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

// waitLog waits until n lines of the bots' logs have the message msg and
// contain every one of wants.
func (s *stack) waitLog(n int, msg string, wants ...string) {
	s.t.Helper()
	count := func() int {
		found := 0
	lines:
		for _, line := range strings.Split(s.logs.String(), "\n") {
			if !strings.Contains(line, fmt.Sprintf("msg=%q ", msg)) {
				continue
			}
			for _, w := range wants {
				if !strings.Contains(line, w) {
					continue lines
				}
			}
			found++
		}
		return found
	}
	for deadline := time.Now().Add(waitFor); count() < n; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			s.t.Fatalf("%d of %d log lines %q with %q after %v\nlogs:\n%s", count(), n, msg, wants, waitFor, s.logs.String())
		}
	}
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
	planID := msg.Buttons()[0].Value
	s.click(bob, msg, approve)
	s.click(carol, msg, approve)
	// The provisioner writes terraform's environment, then starts its own
	// process.
	var childToken string
	for deadline := time.Now().Add(waitFor); childToken == ""; time.Sleep(20 * time.Millisecond) {
		env, err := os.ReadFile(s.envDump())
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			t.Fatal(err)
		}
		childToken = envValue(string(env), "VAULT_TOKEN")
		if childToken == "" && time.Now().After(deadline) {
			t.Fatalf("no child token in terraform's environment after %v (apply never started?): %v\n%s", waitFor, err, env)
		}
	}
	for deadline := time.Now().Add(10 * time.Second); len(holdersOf(t, survivor)) == 0; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the provisioner's own process did not start")
		}
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
	root, err := s.vault.Client()
	if err != nil {
		t.Fatal(err)
	}
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

	if err := os.Remove(s.envDump()); err != nil {
		t.Fatal(err)
	}
	stop := s.startBot("--sweep-interval=200ms")
	done := s.waitTS(msg.TS, "Interrupted")
	if len(done.Buttons()) != 0 || !strings.Contains(done.Content(), "will not be retried") {
		t.Fatalf("interrupted plan:\n%s", done.Content())
	}
	// Stopping the bot joins its sweeper and all the work it started: an
	// apply it began again has been recorded, and has run or been
	// interrupted, by the time stop returns.
	stop()
	if _, err := os.Stat(s.envDump()); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("the interrupted apply ran again (its environment was written: %v)", err)
	}
	if n := s.countEvents(planID, audit.ApplyStarted); n != 1 {
		t.Fatalf("%d %s events for the plan, want the killed bot's one", n, audit.ApplyStarted)
	}
}

// countEvents counts the record's events of typ about planID.
func (s *stack) countEvents(planID, typ string) int {
	s.t.Helper()
	n := 0
	for _, e := range s.events() {
		if e.PlanID == planID && e.Type == typ {
			n++
		}
	}
	return n
}
