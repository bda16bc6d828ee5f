package main

import (
	"os"
	"strings"
	"testing"
	"time"

	"github.com/twokey/twokey/audit"
)

// --shutdown-grace waits: serve is stopped (as SIGTERM does, by cancelling
// Main's context) while an apply that takes about 3 s runs. Within the
// grace, the apply finishes, is recorded applied and the message says
// Applied before serve exits. With a grace shorter than the apply,
// terraform is interrupted and the plan is recorded interrupted.
func TestShutdownGraceWaitsForApply(t *testing.T) {
	for _, tt := range []struct {
		grace  string
		result string // apply_finished's result
		status string // in the plan message
	}{
		{"30s", "applied", "Applied"},
		{"500ms", "interrupted", "Interrupted"},
	} {
		t.Run(tt.grace, func(t *testing.T) {
			s := newStack(t)
			s.provision = " && sleep 3"
			s.openPR(1, "slow")
			stop := s.startBot("--shutdown-grace=" + tt.grace)

			s.slash(alice, "plan staging pr-1")
			msg := s.planMessage(1, "Plan ready for review")
			s.click(bob, msg, approve)
			s.click(carol, msg, approve)
			for deadline := time.Now().Add(waitFor); ; time.Sleep(20 * time.Millisecond) {
				if _, err := os.Stat(s.envDump()); err == nil {
					break // the provisioner runs: the apply is under way
				}
				if time.Now().After(deadline) {
					t.Fatalf("apply never started\nlogs:\n%s", s.logs.String())
				}
			}
			start := time.Now()
			stop()
			t.Logf("grace %s: serve stopped %v after SIGTERM", tt.grace, time.Since(start).Round(time.Millisecond))

			// What serve recorded before it exited: nothing runs any more.
			var results []string
			for _, e := range s.events() {
				if e.Type == audit.ApplyFinished {
					results = append(results, e.Detail["result"])
				}
			}
			if len(results) != 1 || results[0] != tt.result {
				t.Fatalf("apply_finished results %v, want [%s]\nlogs:\n%s", results, tt.result, s.logs.String())
			}
			final := s.waitTS(msg.TS, tt.status)
			if len(final.Buttons()) != 0 {
				t.Errorf("the plan still offers buttons:\n%s", final.Content())
			}
			state, err := os.ReadFile(s.statePath())
			if err != nil {
				t.Fatal(err)
			}
			tainted := strings.Contains(string(state), `"status": "tainted"`)
			if done := tt.result == "applied"; !s.applied("slow") || tainted == done {
				t.Fatalf("state after shutdown (want applied cleanly: %v):\n%s", done, state)
			}
		})
	}
}
