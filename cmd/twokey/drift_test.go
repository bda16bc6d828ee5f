package main

import (
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/twokey/twokey/audit"
	"github.com/twokey/twokey/bot/slacksim"
	"github.com/twokey/twokey/config"
	"github.com/twokey/twokey/devstack/stacktest"
)

const driftFix = "twokey_drift_fix"

// topLevel waits for a top-level channel message containing every want.
func (s *stack) topLevel(wants ...string) slacksim.Message {
	s.t.Helper()
	var found slacksim.Message
	_, err := s.slack.Wait(waitFor, func(msgs []slacksim.Message) bool {
		for _, m := range msgs {
			if m.ThreadTS != "" || m.Ephemeral {
				continue
			}
			all := true
			for _, w := range wants {
				all = all && strings.Contains(m.Content(), w)
			}
			if all {
				found = m
				return true
			}
		}
		return false
	})
	if err != nil {
		s.t.Fatalf("no message containing %q\nmessages:\n%s\nlogs:\n%s", wants, s.dump(), s.logs.String())
	}
	return found
}

// waitCount waits for n top-level messages containing want.
func (s *stack) waitCount(want string, n int) {
	s.t.Helper()
	if _, err := s.slack.Wait(waitFor, func(msgs []slacksim.Message) bool {
		c := 0
		for _, m := range msgs {
			if m.ThreadTS == "" && !m.Ephemeral && strings.Contains(m.Content(), want) {
				c++
			}
		}
		return c >= n
	}); err != nil {
		s.t.Fatalf("fewer than %d messages containing %q\nmessages:\n%s", n, want, s.dump())
	}
}

// `/tf drift`: an environment that matches the default branch gets one
// quiet line; one where a change was applied that the default branch does
// not have gets a report naming the resource and who applied, and Plan a
// fix plans the default branch's head through the normal approvals, after
// which the environment matches again. Every check is in the record.
func TestDriftOnDemand(t *testing.T) {
	s := newStack(t)
	s.openPR(1, "web")
	stop := s.startBot()
	defer stop()

	s.slash(alice, "drift staging")
	s.topLevel("No drift in *staging*", s.main[:7])

	// PR 1 is applied, and not merged: live infrastructure has a resource
	// the default branch does not.
	s.slash(alice, "plan staging pr-1")
	msg := s.planMessage(1, "Plan ready for review")
	s.click(bob, msg, approve)
	msg = s.planMessage(1, "1 more needed")
	s.click(carol, msg, approve)
	s.planMessage(1, "Applied")

	s.slash(dave, "drift staging")
	report := s.topLevel("Drift in staging", "terraform_data.web", "PR #1", "<@"+alice+">", "Last applied")
	if b := report.Buttons(); len(b) != 1 || b[0].ActionID != driftFix {
		t.Fatalf("drift report buttons = %+v", b)
	}

	// Plan a fix: the default branch's head, planned and approved as usual.
	s.click(dave, report, driftFix)
	fix := s.topLevel("commit "+s.main[:7], "Plan ready for review")
	if !strings.Contains(fix.Content(), "<@"+dave+">") {
		t.Errorf("the fix's plan is not dave's:\n%s", fix.Content())
	}
	s.click(dave, fix, approve) // the requester: not counted
	s.ephemeral(dave, "cannot approve")
	s.click(bob, fix, approve)
	fix = s.topLevel("commit "+s.main[:7], "1 more needed")
	if !s.applied("web") {
		t.Fatal("the fix was applied after one approval")
	}
	s.click(erin, fix, approve)
	s.topLevel("commit "+s.main[:7], "Applied")
	if s.applied("web") {
		t.Fatal("web still in state after the fix")
	}

	s.slash(alice, "drift staging")
	s.waitCount("No drift in *staging*", 2)

	var results []string
	for _, e := range s.events() {
		if e.Type == audit.DriftCheck {
			results = append(results, e.Detail["result"]+"/"+e.Detail["trigger"])
		}
	}
	if strings.Join(results, " ") != "clean/command drift/command clean/command" {
		t.Errorf("drift checks recorded: %v", results)
	}
}

// The drift schedule, on two serve replicas: each tick's check runs on one
// of them (a Redis lease per tick), a clean environment says nothing
// (quiet), and a change applied between two ticks is reported at the next.
// The schedule has a seconds field, so the test waits seconds, not a day.
func TestScheduledDriftTwoReplicas(t *testing.T) {
	s := newStack(t)
	s.openPR(1, "web")
	terraform := stacktest.Tool(t, "terraform")
	withDrift := func(name, dataDir string) string {
		cfg := s.baseConfig(dataDir, terraform)
		cfg.Projects[0].Environments[0].Drift = &config.Drift{Schedule: "*/2 * * * * *", Channel: channel, Quiet: true}
		return s.write(name, cfg)
	}
	s.config = withDrift("twokey-a.yaml", filepath.Join(s.dir, "data-a"))
	stopA := s.startBot()
	defer stopA()
	s.config = withDrift("twokey-b.yaml", filepath.Join(s.dir, "data-b"))
	stopB := s.startBot()
	defer stopB()

	scheduled := func() (ticks map[string]int, results []string) {
		ticks = map[string]int{}
		for _, e := range s.events() {
			if e.Type == audit.DriftCheck && e.Detail["trigger"] == "schedule" {
				ticks[e.Detail["tick"]]++
				results = append(results, e.Detail["result"])
			}
		}
		return ticks, results
	}
	waitTicks := func(n int) {
		t.Helper()
		for deadline := time.Now().Add(waitFor); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
			if ticks, _ := scheduled(); len(ticks) >= n {
				return
			}
		}
		t.Fatalf("fewer than %d scheduled drift checks\nlogs:\n%s", n, s.logs.String())
	}
	waitTicks(2)
	for _, m := range s.slack.Messages() {
		if strings.Contains(m.Content(), "drift") || strings.Contains(m.Content(), "Drift") {
			t.Errorf("a clean environment with quiet: true said something: %s", m.Content())
		}
	}

	s.slash(alice, "plan staging pr-1")
	msg := s.planMessage(1, "Plan ready for review")
	s.click(bob, msg, approve)
	msg = s.planMessage(1, "1 more needed")
	s.click(carol, msg, approve)
	s.planMessage(1, "Applied")
	report := s.topLevel("Drift in staging", "terraform_data.web", "PR #1")
	if b := report.Buttons(); len(b) != 1 || b[0].ActionID != driftFix {
		t.Errorf("scheduled drift report buttons = %+v", b)
	}
	stopA()
	stopB()

	ticks, results := scheduled()
	for tick, n := range ticks {
		if n != 1 {
			t.Errorf("tick %s checked %d times", tick, n)
		}
	}
	if len(ticks) < 3 || results[0] != "clean" || !slices.Contains(results, "drift") {
		t.Errorf("scheduled checks: %d ticks, results %v", len(ticks), results)
	}
	t.Logf("%d scheduled ticks across two replicas, each checked once: %v", len(ticks), results)
}
