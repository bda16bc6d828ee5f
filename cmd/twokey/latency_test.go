package main

import (
	"flag"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/twokey/twokey/audit"
)

var latency = flag.Bool("twokey.latency", false, "measure click → apply start (TestClickToApplyLatency)")

// TestClickToApplyLatency measures, with signing and verifying on, how long
// after the deciding click the apply's Vault credential is minted (the last
// step before terraform apply runs), and until the apply_started record, on
// an embedded runner and on a runner pool. It logs numbers and asserts
// nothing about time.
//
//	go test -run TestClickToApplyLatency -args -twokey.latency ./cmd/twokey
func TestClickToApplyLatency(t *testing.T) {
	if !*latency {
		t.Skip("pass -twokey.latency")
	}
	const n = 7
	measure := func(t *testing.T, s *stack) {
		var started, minted []time.Duration
		for i := 1; i <= n; i++ {
			s.openPR(i, fmt.Sprintf("r%d", i))
			s.slash(alice, fmt.Sprintf("plan staging pr-%d", i))
			msg := s.planMessage(i, "Plan ready for review")
			planID := msg.Buttons()[0].Value
			s.click(bob, msg, approve)
			s.waitTS(msg.TS, "1 more needed")
			clicked := time.Now()
			s.click(carol, msg, approve)
			s.waitTS(msg.TS, "Applied")
			var start, mint time.Time
			for _, e := range s.events() {
				if e.PlanID != planID {
					continue
				}
				switch {
				case e.Type == audit.ApplyStarted:
					start = e.Time
				case e.Type == audit.CredentialMinted && strings.HasPrefix(e.Detail["purpose"], "apply "):
					mint = e.Time
				}
			}
			started, minted = append(started, start.Sub(clicked)), append(minted, mint.Sub(clicked))
		}
		slices.Sort(started)
		slices.Sort(minted)
		t.Logf("click → apply_started: median %v (min %v, max %v); click → apply credential minted: median %v (min %v, max %v); %d applies",
			started[n/2].Round(100*time.Microsecond), started[0].Round(100*time.Microsecond), started[n-1].Round(100*time.Microsecond),
			minted[n/2].Round(100*time.Microsecond), minted[0].Round(100*time.Microsecond), minted[n-1].Round(100*time.Microsecond), n)
	}
	t.Run("embedded", func(t *testing.T) {
		s := newStack(t)
		s.startBot()
		measure(t, s)
	})
	t.Run("pool", func(t *testing.T) {
		w := newPoolWorld(t)
		w.startServe()
		w.startRunner("nonprod", "np-1")
		measure(t, w.stack)
	})
}
