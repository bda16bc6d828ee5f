package main

import (
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twokey/twokey/bot/slacksim"
	"github.com/twokey/twokey/devstack/stacktest"
)

// countingTerraform writes a wrapper around the real terraform that logs
// every `terraform apply` it is asked to run, so the test counts applies
// independently of twokey's own records.
func countingTerraform(t *testing.T, dir string) (path, log string) {
	t.Helper()
	path, log = filepath.Join(dir, "terraform"), filepath.Join(dir, "applies.log")
	script := fmt.Sprintf("#!/bin/sh\nif [ \"$1\" = apply ]; then echo \"$*\" >> %s; fi\nexec %s \"$@\"\n",
		log, stacktest.Tool(t, "terraform"))
	if err := os.WriteFile(path, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return path, log
}

// Promise 4: randomized scenarios replay every envelope 1–5 times (with
// retry_attempt and retry_reason), and people double-click, across two bot
// processes that each receive some of the deliveries. Every plan that reaches
// quorum is applied exactly once; no other plan is applied.
func TestDuplicateDeliveryAcrossTwoBots(t *testing.T) {
	scenarios := 100
	if *full {
		scenarios = 1000
	}
	s := newStack(t)
	tf, applyLog := countingTerraform(t, s.out)
	bots := []*botProcess{
		s.startBotProcess(s.writeConfig("a.yaml", filepath.Join(s.dir, "data-a"), tf)),
		s.startBotProcess(s.writeConfig("b.yaml", filepath.Join(s.dir, "data-b"), tf)),
	}
	if err := s.slack.WaitConnected(2, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(42, uint64(scenarios)))
	approvers := []string{bob, carol, erin}
	others := []string{dave, alice}
	want := map[string]bool{} // plan ID → should be applied
	start := time.Now()
	deliveries := 0

	// deliver sends one new envelope and redelivers it 0–4 more times.
	deliver := func(send func() (string, error)) {
		id, err := send()
		if err != nil {
			t.Error(err)
			return
		}
		deliveries++
		for i := range rng.IntN(5) {
			time.Sleep(time.Duration(rng.IntN(3)) * time.Millisecond)
			if err := s.slack.Redeliver(id, []string{"timeout", "http_error"}[i%2]); err != nil {
				t.Error(err)
			}
			deliveries++
		}
	}
	for n := 1; n <= scenarios; n++ {
		s.openPR(n, fmt.Sprintf("r%d", n))
		deliver(func() (string, error) {
			return s.slack.SlashCommand(alice, channel, fmt.Sprintf("plan staging pr-%d", n))
		})
		msg := s.planMessage(n, "Plan ready for review")
		planID := msg.Buttons()[0].Value

		var clickers []string
		for _, u := range append(slices.Clone(approvers), others...) {
			if rng.IntN(2) == 0 {
				clickers = append(clickers, u)
			}
		}
		quorum := 0
		for _, u := range clickers {
			if slices.Contains(approvers, u) {
				quorum++
			}
		}
		want[planID] = quorum >= 2

		// Everyone clicks at once, from views that still show the buttons;
		// some double-click; Slack redelivers some.
		var presses []string // decided before the goroutines share rng
		for _, u := range clickers {
			for range 1 + rng.IntN(2) {
				presses = append(presses, u)
			}
		}
		before := len(s.slack.Messages())
		var wg sync.WaitGroup
		var mu sync.Mutex
		for _, u := range presses {
			wg.Go(func() {
				mu.Lock() // deliveries share rng; the bots handle them concurrently
				defer mu.Unlock()
				deliver(func() (string, error) { return s.slack.ClickStale(u, channel, msg.TS, approve, planID) })
			})
		}
		wg.Wait()
		if want[planID] {
			s.waitTS(msg.TS, "Applied")
		} else {
			// Every click is decided before the plan is rejected: only
			// duplicates are still in flight.
			s.waitDecided(msg, before, clickers, approvers)
			s.click(alice, msg, reject) // free the environment for the next scenario
			s.waitTS(msg.TS, "Rejected")
		}
	}

	// Both bots stop as SIGTERM makes them, joining all the work they
	// started: every apply they would run has been logged.
	for _, b := range bots {
		b.stop(t)
	}
	b, err := os.ReadFile(applyLog)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		t.Fatal(err)
	}
	applied := map[string]int{}
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		if f := strings.Fields(line); len(f) > 0 {
			applied[strings.TrimSuffix(filepath.Base(f[len(f)-1]), ".tfplan")]++
		}
	}
	quorums := 0
	for id, should := range want {
		n := applied[id]
		if should {
			quorums++
		}
		if should && n != 1 || !should && n != 0 {
			t.Errorf("plan %s applied %d times, want %v", id, n, should)
		}
	}
	t.Logf("%d scenarios (%d reached quorum), %d deliveries to two bot processes, in %v: every plan applied exactly as often as it should",
		scenarios, quorums, deliveries, time.Since(start).Round(time.Millisecond))
}

// waitDecided waits until each of clickers has had a click on msg decided
// since message number before: an approver's approval shows on it, anyone
// else has been told why not.
func (s *stack) waitDecided(msg slacksim.Message, before int, clickers, approvers []string) {
	s.t.Helper()
	_, err := s.slack.Wait(waitFor, func(msgs []slacksim.Message) bool {
		for _, u := range clickers {
			decided := false
			for i, m := range msgs {
				switch {
				case slices.Contains(approvers, u):
					decided = decided || m.TS == msg.TS && strings.Contains(m.Content(), "Approved by <@"+u+">")
				default:
					decided = decided || i >= before && m.Ephemeral && m.For == u
				}
			}
			if !decided {
				return false
			}
		}
		return true
	})
	if err != nil {
		s.t.Fatalf("the clicks of %v on %s were not all decided\nmessages:\n%s\nlogs:\n%s", clickers, msg.TS, s.dump(), s.logs.String())
	}
}
