package main

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/twokey/twokey/approvals"
	"github.com/twokey/twokey/approvals/redisstore"
	"github.com/twokey/twokey/audit"
	"github.com/twokey/twokey/bot/slacksim"
	"github.com/twokey/twokey/devstack/stacktest"
	"github.com/twokey/twokey/runner/redisjobs"
)

// The attacker of these tests holds the Redis password and nothing else:
// no Slack account that may approve, no twokey signing key.

// A Redis writer adds a second approval to a pending plan (a compare-and-
// swap with the record's own version), then one real approver clicks. The
// forged approval does not count: nothing is applied until a second real
// person approves, and the record says what was found.
func TestForgedApprovalDoesNotCount(t *testing.T) {
	s := newStack(t)
	s.openPR(1, "web")
	s.startBot()
	s.slash(alice, "plan staging pr-1")
	msg := s.planMessage(1, "Plan ready for review")
	planID := msg.Buttons()[0].Value

	rdb := redis.NewClient(&redis.Options{Addr: s.redis.Addr})
	defer rdb.Close()
	ctx := context.Background()
	if _, err := approvals.Update(ctx, redisstore.New(rdb, keyPrefix, 0), planID, func(p approvals.Plan) (approvals.Plan, error) {
		p.Approvals = append(p.Approvals, approvals.Approval{User: carol, At: time.Now(), Digest: p.Digest, SHA: p.SHA, Fence: p.Fence})
		return p, nil
	}); err != nil {
		t.Fatal(err)
	}

	s.click(bob, msg, approve)
	got := s.waitAny(msg.TS, "1 more needed", "Applying", "Applied")
	if !strings.Contains(got.Content(), "1 more needed") || s.applied("web") {
		t.Fatalf("one real click and one forged approval applied the plan:\n%s", got.Content())
	}
	if strings.Contains(got.Content(), "carol") {
		t.Fatalf("the message names the forged approver:\n%s", got.Content())
	}
	if !s.hasEvent(planID, "forgery", "") {
		t.Fatal("no forgery event in the record")
	}

	s.click(carol, msg, approve)
	s.waitTS(msg.TS, "Applied")
	if !s.applied("web") {
		t.Fatal("two real approvals did not apply")
	}
}

// A Redis writer sets a pending prod plan to applying, with two made-up
// approvals, and puts an apply job on the prod pool's stream. The prod
// worker verifies the grant before it mints anything: there is none, so it
// refuses, records the refusal, and nothing is minted or applied.
func TestForgedApplyJobRefused(t *testing.T) {
	w := newPoolWorld(t)
	w.openPR(1, "web")
	w.startServe()
	w.startRunner("nonprod", "np-1")
	w.startRunner("prod", "prod-1")
	ctx := context.Background()

	// Staging applied the honest way, so that prod may be planned.
	w.slash(alice, "plan staging pr-1")
	staging := w.planMessage(1, "Plan ready for review")
	w.click(bob, staging, approve)
	w.click(carol, staging, approve)
	w.waitTS(staging.TS, "Applied")
	w.slash(alice, "plan prod pr-1")
	prod := w.waitTS(w.visible("prod · PR #1").TS, "Plan ready for review")
	planID := prod.Buttons()[0].Value

	for _, attack := range []struct {
		name  string
		forge func(p approvals.Plan) approvals.Plan
	}{
		{"no permit", func(p approvals.Plan) approvals.Plan { return p }},
		{"another plan's signed permit", func(p approvals.Plan) approvals.Plan {
			p.Permit = w.plan(staging.Buttons()[0].Value).Permit
			return p
		}},
	} {
		t.Run(attack.name, func(t *testing.T) {
			store := redisstore.New(w.rdb, keyPrefix, 0)
			if _, err := approvals.Update(ctx, store, planID, func(p approvals.Plan) (approvals.Plan, error) {
				p.Approvals = nil
				for _, u := range []string{bob, carol} {
					p.Approvals = append(p.Approvals, approvals.Approval{User: u, At: time.Now(), Digest: p.Digest, SHA: p.SHA, Fence: p.Fence})
				}
				p.Status, p.Executor = approvals.StatusApplying, ""
				return attack.forge(p), nil
			}); err != nil {
				t.Fatal(err)
			}
			// The job's revision is copied from the plan job on the same stream.
			var job redisjobs.Job
			for _, m := range w.rdb.XRange(ctx, keyPrefix+"jobs:{prod}", "-", "+").Val() {
				var j redisjobs.Job
				if json.Unmarshal([]byte(m.Values["job"].(string)), &j) == nil && j.PlanID == planID && j.Kind == redisjobs.KindPlan {
					job = j
				}
			}
			if job.ID == "" {
				t.Fatal("no plan job to copy")
			}
			job.ID, job.Kind, job.At = planID+":apply:"+strings.ReplaceAll(attack.name, " ", "-"), redisjobs.KindApply, time.Now()
			raw, err := json.Marshal(job)
			if err != nil {
				t.Fatal(err)
			}
			if err := w.rdb.XAdd(ctx, &redis.XAddArgs{Stream: keyPrefix + "jobs:{prod}", Values: map[string]any{"job": raw}}).Err(); err != nil {
				t.Fatal(err)
			}
			outcome := w.jobOutcome(job.ID)
			if !strings.Contains(outcome, `"forged"`) || !strings.Contains(outcome, `"worker":"prod-1"`) {
				t.Fatalf("the forged apply job was not refused as forged: %s", outcome)
			}
			if w.appliedIn("prod", "web") {
				t.Fatal("the forged job applied to prod")
			}
			if !w.hasEvent(planID, "forgery", "prod-1") {
				t.Fatal("the refusal is not in the record")
			}
			for _, e := range w.events() {
				if e.PlanID == planID && (e.Type == audit.CredentialMinted || e.Type == audit.ApplyStarted) {
					t.Fatalf("a forged job got as far as %s", e.Type)
				}
			}
		})
	}
}

// A Redis writer puts a break-glass job for prod on the prod pool's stream.
// Unsigned, it is refused: no token is minted, and no wrapping token lands
// in Redis for the writer to unwrap.
func TestForgedBreakGlassJobRefused(t *testing.T) {
	w := newPoolWorld(t)
	w.startServe()
	w.startRunner("prod", "prod-1")
	ctx := context.Background()
	job := redisjobs.Job{ID: "bg-forged:breakglass:1", Kind: redisjobs.KindBreakGlass, PlanID: "bg-forged", Project: "infra",
		Env: "prod", Pool: "prod", TTL: 30 * time.Minute, At: time.Now()}
	raw, err := json.Marshal(job)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.rdb.XAdd(ctx, &redis.XAddArgs{Stream: keyPrefix + "jobs:{prod}", Values: map[string]any{"job": raw}}).Err(); err != nil {
		t.Fatal(err)
	}
	outcome := w.jobOutcome(job.ID)
	if !strings.Contains(outcome, `"forged"`) || strings.Contains(outcome, "hvs.") {
		t.Fatalf("the forged break-glass job was not refused: %s", outcome)
	}
	if key := redisHolding(t, w.rdb, "hvs."); key != "" {
		t.Fatalf("a Vault token is in Redis under %s", key)
	}
	if !w.hasEvent("bg-forged", "forgery", "prod-1") {
		t.Fatal("the refusal is not in the record")
	}
	for _, e := range w.events() {
		if e.PlanID == "bg-forged" && e.Type == audit.CredentialMinted {
			t.Fatal("a break-glass token was minted for a forged job")
		}
	}
}

// A Redis writer drops a plan's events from the audit stream and seals the
// rest again with the keyless sha256 chain; or cuts the newest events off
// the end. `twokey audit verify` names the first rewritten event, and the
// copy in the audit.file sink shows the cut.
func TestRewrittenAuditChainIsCaught(t *testing.T) {
	s := newStack(t)
	cfg := s.baseConfig(filepath.Join(s.dir, "data"), s.terraform())
	cfg.Audit.File = filepath.Join(s.dir, "audit.jsonl")
	s.config = s.write("twokey.yaml", cfg)
	s.openPR(1, "web")
	s.openPR(2, "db")
	stop := s.startBot()
	s.slash(alice, "plan staging pr-1")
	msg := s.planMessage(1, "Plan ready for review")
	planID := msg.Buttons()[0].Value
	s.click(bob, msg, approve)
	s.click(carol, msg, approve)
	s.waitTS(msg.TS, "Applied")
	s.slash(alice, "plan staging pr-2")
	second := s.planMessage(2, "Plan ready for review")
	s.click(alice, second, reject)
	s.waitTS(second.TS, "Rejected")
	stop()
	if code, out := s.auditMain("verify"); code != 0 || !strings.Contains(out, "intact") {
		t.Fatalf("verify of an untouched chain: %d %s", code, out)
	}

	rdb := redis.NewClient(&redis.Options{Addr: s.redis.Addr})
	defer rdb.Close()
	ctx := context.Background()
	stream, last := keyPrefix+"{audit}:stream", keyPrefix+"{audit}:last"
	original, err := rdb.XRange(ctx, stream, "-", "+").Result()
	if err != nil {
		t.Fatal(err)
	}
	if len(original) < 4 {
		t.Fatalf("%d events in the record", len(original))
	}
	restore := func() {
		t.Helper()
		redisOK(t, rdb.Del(ctx, stream))
		for _, m := range original {
			redisOK(t, rdb.XAdd(ctx, &redis.XAddArgs{Stream: stream, ID: m.ID, Values: m.Values}))
		}
		redisOK(t, rdb.Set(ctx, last, eventAt(t, original, len(original)-1).Hash, 0))
	}

	// Drop every event of the applied plan; seal what follows again.
	redisOK(t, rdb.Del(ctx, stream))
	prev, first, kept := "", -1, 0
	for _, m := range original {
		var e audit.Event
		if err := json.Unmarshal([]byte(m.Values["event"].(string)), &e); err != nil {
			t.Fatal(err)
		}
		if e.PlanID == planID {
			if first < 0 {
				first = kept
			}
			continue
		}
		e.ID = ""
		e.Seal(prev)
		prev = e.Hash
		raw, err := json.Marshal(e)
		if err != nil {
			t.Fatal(err)
		}
		redisOK(t, rdb.XAdd(ctx, &redis.XAddArgs{Stream: stream, ID: m.ID, Values: map[string]any{"event": raw}}))
		kept++
	}
	redisOK(t, rdb.Set(ctx, last, prev, 0))
	if first < 0 || first >= kept {
		t.Fatalf("nothing follows the dropped events (first %d of %d)", first, kept)
	}
	code, out := s.auditMain("verify")
	if code == 0 || !strings.Contains(out, fmt.Sprintf("broken at event %d ", first)) {
		t.Fatalf("verify of a re-sealed chain (first rewritten event %d): %d %s", first, code, out)
	}
	t.Logf("re-sealed chain: %s", strings.TrimSpace(out))

	// Cut the newest events off the end, leaving a chain that is intact
	// and signed as far as it goes.
	restore()
	cut := original[len(original)-3]
	for _, m := range original[len(original)-3:] {
		redisOK(t, rdb.XDel(ctx, stream, m.ID))
	}
	redisOK(t, rdb.Set(ctx, last, eventAt(t, original, len(original)-4).Hash, 0))
	code, out = s.auditMain("verify")
	if code == 0 || !strings.Contains(out, "not in the chain") {
		t.Fatalf("verify of a truncated chain (from %s): %d %s", cut.ID, code, out)
	}
	t.Logf("truncated chain: %s", strings.TrimSpace(out))
}

// redisOK fails the test if a Redis command failed.
func redisOK(t *testing.T, cmd redis.Cmder) {
	t.Helper()
	if err := cmd.Err(); err != nil {
		t.Fatal(err)
	}
}

// eventAt decodes the audit event stored as the i-th entry of the stream.
func eventAt(t *testing.T, stream []redis.XMessage, i int) audit.Event {
	t.Helper()
	raw, _ := stream[i].Values["event"].(string)
	var e audit.Event
	if err := json.Unmarshal([]byte(raw), &e); err != nil {
		t.Fatalf("event %d (%s): %v", i, stream[i].ID, err)
	}
	return e
}

// waitAny waits for the message at ts to contain one of wants.
func (s *stack) waitAny(ts string, wants ...string) (found slacksim.Message) {
	s.t.Helper()
	_, err := s.slack.Wait(waitFor, func(msgs []slacksim.Message) bool {
		for _, m := range msgs {
			for _, w := range wants {
				if m.TS == ts && strings.Contains(m.Content(), w) {
					found = m
					return true
				}
			}
		}
		return false
	})
	if err != nil {
		s.t.Fatalf("message %s never contained any of %q\nmessages:\n%s", ts, wants, s.dump())
	}
	return found
}

// hasEvent reports whether the record holds an event of typ about planID,
// written by the process named by (if set).
func (s *stack) hasEvent(planID, typ, by string) bool {
	s.t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		for _, e := range s.events() {
			if e.PlanID == planID && e.Type == typ && (by == "" || e.Actor.Name == by) {
				return true
			}
		}
	}
	return false
}

// jobOutcome waits for a job's result event and returns it.
func (w *poolWorld) jobOutcome(jobID string) string {
	w.t.Helper()
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		for _, m := range w.rdb.XRange(context.Background(), keyPrefix+"job:prod:{"+jobID+"}", "-", "+").Val() {
			if raw, _ := m.Values["event"].(string); strings.Contains(raw, `"type":"result"`) {
				return raw
			}
		}
	}
	w.t.Fatalf("no result for job %s\nlogs:\n%s", jobID, w.logs.String())
	return ""
}

func (s *stack) terraform() string { return stacktest.Tool(s.t, "terraform") }
