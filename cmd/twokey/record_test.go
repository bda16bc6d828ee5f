package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/twokey/twokey/audit"
	"github.com/twokey/twokey/runner/ghsim"
)

// auditMain runs `twokey audit <args>` against the stack and returns its
// exit code and output.
func (s *stack) auditMain(args ...string) (int, string) {
	var out bytes.Buffer
	code := Main(context.Background(), append([]string{"audit"}, append(args, "--config", s.config)...), &out, &out, s.env)
	return code, out.String()
}

// The full flow leaves the expected events, in order, in an intact chain;
// editing or deleting one makes `twokey audit verify` fail at that point.
func TestAuditTrail(t *testing.T) {
	s := newStack(t)
	s.openPR(1, "web")
	s.startBot()
	s.slash(alice, "plan staging pr-1")
	msg := s.planMessage(1, "Plan ready for review")
	planID := msg.Buttons()[0].Value
	s.click(bob, msg, approve)
	// The two clicks are handled concurrently; the record's order is the
	// order they were counted in, so carol clicks once bob's has counted.
	s.waitTS(msg.TS, "more needed")
	s.click(carol, msg, approve)
	s.waitTS(msg.TS, "Applied")

	code, out := s.auditMain("export", "--since", "720h", "--format", "jsonl")
	if code != 0 {
		t.Fatalf("export: %s", out)
	}
	var events []audit.Event
	for sc := bufio.NewScanner(strings.NewReader(out)); sc.Scan(); {
		var e audit.Event
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			t.Fatalf("export line %q: %v", sc.Text(), err)
		}
		events = append(events, e)
	}
	var flow []string
	for _, e := range events {
		if e.PlanID == planID || e.Type == audit.Command || e.Type == audit.ConfigLoaded {
			if e.Type != audit.GitHubUpdated {
				flow = append(flow, e.Type+":"+e.Actor.Name)
			}
		}
	}
	want := []string{"config_loaded:twokey", "command:alice", "plan_started:alice",
		"credential_requested:serve", "credential_minted:serve", "credential_revoked:serve", "plan_finished:twokey",
		"approval:bob", "approval:carol", "apply_started:serve", "credential_requested:serve", "credential_minted:serve", "credential_revoked:serve",
		"apply_finished:serve"}
	if fmt.Sprint(flow) != fmt.Sprint(want) {
		t.Fatalf("events:\n%v\nwant\n%v", flow, want)
	}
	for _, e := range events {
		if e.PlanID == planID && e.Type != audit.Command && (e.SHA != s.prs[1] || e.Env != "staging" || e.Fence == 0) {
			t.Errorf("event %s lacks its subject: %+v", e.Type, e)
		}
		if e.Type == audit.PlanStarted && !strings.HasPrefix(e.Permalink, "https://") {
			t.Errorf("plan_started has no permalink: %+v", e)
		}
		if e.Type == audit.CredentialMinted && (e.Detail["accessor"] == "" || e.Detail["ttl"] == "") {
			t.Errorf("credential_minted lacks accessor or TTL: %+v", e.Detail)
		}
		raw, err := json.Marshal(e)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(raw), "hvs.") || strings.Contains(string(raw), kvPassword) {
			t.Errorf("a secret reached the audit record: %s", raw)
		}
	}
	if code, out := s.auditMain("verify"); code != 0 || !strings.Contains(out, "intact") {
		t.Fatalf("verify of an untouched chain: %d %s", code, out)
	}

	rdb := redis.NewClient(&redis.Options{Addr: s.redis.Addr})
	defer rdb.Close()
	ctx := context.Background()
	stream := keyPrefix + "{audit}:stream"
	msgs := rdb.XRange(ctx, stream, "-", "+").Val()
	// Edit: rewrite the stream with bob's approval credited to mallory.
	edited := -1
	for i, m := range msgs {
		if strings.Contains(m.Values["event"].(string), `"name":"bob"`) {
			edited = i
			break
		}
	}
	if edited < 0 || edited == len(msgs)-1 {
		t.Fatalf("no approval by bob to edit in %d events", len(msgs))
	}
	rdb.Rename(ctx, stream, stream+":original")
	for i, m := range msgs {
		raw := m.Values["event"].(string)
		if i == edited {
			raw = strings.Replace(raw, `"name":"bob"`, `"name":"mallory"`, 1)
		}
		rdb.XAdd(ctx, &redis.XAddArgs{Stream: stream, ID: m.ID, Values: map[string]any{"event": raw}})
	}
	code, out = s.auditMain("verify")
	if code == 0 || !strings.Contains(out, fmt.Sprintf("broken at event %d (%s)", edited, msgs[edited].ID)) {
		t.Fatalf("verify after an edit: %d %s", code, out)
	}
	// Delete: put the original back and drop one event.
	rdb.Del(ctx, stream)
	rdb.Rename(ctx, stream+":original", stream)
	rdb.XDel(ctx, stream, msgs[edited].ID)
	code, out = s.auditMain("verify")
	if code == 0 || !strings.Contains(out, fmt.Sprintf("broken at event %d (%s)", edited, msgs[edited+1].ID)) {
		t.Fatalf("verify after a deletion: %d %s", code, out)
	}
	t.Logf("verify after the deletion: %s", strings.TrimSpace(out))
}

// /tf history and /tf show tell the story from the record.
func TestHistoryAndShow(t *testing.T) {
	s := newStack(t)
	s.openPR(1, "web")
	s.startBot()
	s.slash(alice, "plan staging pr-1")
	msg := s.planMessage(1, "Plan ready for review")
	planID := msg.Buttons()[0].Value
	s.click(bob, msg, approve)
	s.click(carol, msg, approve)
	s.waitTS(msg.TS, "Applied")

	s.slash(dave, "history staging 5")
	h := s.ephemeral(dave, "Last 1 changes in infra/staging")
	for _, want := range []string{"PR #1", s.prs[1][:7], "asked by <@" + alice + ">", "<@" + bob + ">", "<@" + carol + ">", "applied", "|message>"} {
		if !strings.Contains(h.Content(), want) {
			t.Errorf("history lacks %q:\n%s", want, h.Content())
		}
	}
	s.slash(dave, "show "+planID)
	show := s.ephemeral(dave, "Plan `"+planID+"`")
	for _, want := range []string{"plan started", "approval · <@" + bob + ">", "credential minted", "accessor", "apply finished", "result applied"} {
		if !strings.Contains(show.Content(), want) {
			t.Errorf("show lacks %q:\n%s", want, show.Content())
		}
	}
}

// A plan of 2,000 resources: the message stays within Slack's limits, the
// thread carries the full plan as a file, and no sensitive value reaches
// Slack or GitHub.
func TestLargePlanAndSensitiveValues(t *testing.T) {
	s := newStack(t)
	const planted = "planted-sensitive-value-9f3c"
	var tf strings.Builder
	tf.WriteString("terraform {\n  backend \"local\" {}\n}\n")
	fmt.Fprintf(&tf, "variable \"db_password\" {\n  default   = %q\n  sensitive = true\n}\n", planted)
	tf.WriteString("resource \"terraform_data\" \"secret\" {\n  input = var.db_password\n}\n")
	tf.WriteString("output \"password\" {\n  value     = var.db_password\n  sensitive = true\n}\n")
	for i := range 2000 {
		fmt.Fprintf(&tf, "resource \"terraform_data\" \"r%d\" {\n  input = \"value-%d\"\n}\n", i, i)
	}
	s.openPRWith(1, tf.String())
	s.startBot()

	s.slash(alice, "plan staging pr-1")
	msg := s.planMessage(1, "Plan ready for review")
	if !strings.Contains(msg.Content(), "more") || !strings.Contains(msg.Content(), "2001") {
		t.Errorf("the message does not summarise 2,001 resources:\n%.500s", msg.Content())
	}
	file := s.thread(msg, "")
	for deadline := time.Now().Add(waitFor); len(file.Files) == 0; time.Sleep(50 * time.Millisecond) {
		for _, m := range s.slack.Messages() {
			if m.ThreadTS == msg.TS && len(m.Files) > 0 {
				file = m
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("no plan file in the thread")
		}
	}
	content, ok := s.slack.FileContent(file.Files[0].ID)
	if !ok || !strings.Contains(string(content), "terraform_data.r1999 will be created") ||
		!strings.Contains(string(content), "Plan: 2001 to add") {
		t.Fatalf("the file does not carry the full plan (%d bytes)", len(content))
	}
	if strings.Contains(string(content), planted) {
		t.Fatal("a sensitive value is in the uploaded plan")
	}
	for _, c := range s.slack.Calls() {
		for k, v := range c.Params {
			if strings.Contains(v, planted) {
				t.Fatalf("a sensitive value reached Slack in %s %s", c.Method, k)
			}
		}
		if c.Error != "" {
			t.Errorf("Slack refused %s: %s", c.Method, c.Error)
		}
	}
	for _, r := range s.gh.Requests() {
		if strings.Contains(r.Body, planted) {
			t.Fatalf("a sensitive value reached GitHub in %s %s", r.Method, r.Path)
		}
	}
}

// The PR gets one comment, edited in place as the plan moves on, and
// commit statuses in order; GitHub refusing writes for a while delays only
// GitHub, which catches up once it is back.
func TestGitHubFeedback(t *testing.T) {
	s := newStack(t)
	s.openPR(1, "web")
	s.startBot()

	s.gh.FailWrites(true)
	s.slash(alice, "plan staging pr-1")
	msg := s.planMessage(1, "Plan ready for review")
	s.click(bob, msg, approve)
	s.click(carol, msg, approve)
	s.waitTS(msg.TS, "Applied") // Slack did not wait for GitHub
	if c := s.gh.Comments("acme/infra"); len(c) != 0 {
		t.Fatalf("comments written while GitHub refused writes: %+v", c)
	}
	s.gh.FailWrites(false)
	var comments []ghsim.Comment
	for deadline := time.Now().Add(waitFor); ; time.Sleep(50 * time.Millisecond) {
		comments = s.gh.Comments("acme/infra")
		if len(comments) == 1 && strings.Contains(comments[0].Bodies[len(comments[0].Bodies)-1], "**Applied**") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the PR did not catch up: %+v", comments)
		}
	}
	statuses := s.gh.Statuses("acme/infra")
	last := map[string]string{}
	for _, st := range statuses {
		if st.SHA != s.prs[1] {
			t.Errorf("status on %s, want the head %s", st.SHA, s.prs[1])
		}
		last[st.Context] = st.State
	}
	if last["twokey/plan/staging"] != "success" || last["twokey/apply/staging"] != "success" {
		t.Fatalf("final statuses = %v", last)
	}

	// With GitHub up, a second plan's comment is created once and edited in
	// place at each step, and its statuses go out in order.
	s.openPR(2, "db")
	s.slash(alice, "plan staging pr-2")
	msg = s.planMessage(2, "Plan ready for review")
	waitStatus := func(ctxName, state string) {
		t.Helper()
		for deadline := time.Now().Add(waitFor); ; time.Sleep(20 * time.Millisecond) {
			for _, st := range s.gh.Statuses("acme/infra") {
				if st.SHA == s.prs[2] && st.Context == ctxName && st.State == state {
					return
				}
			}
			if time.Now().After(deadline) {
				t.Fatalf("no %s=%s status", ctxName, state)
			}
		}
	}
	waitStatus("twokey/apply/staging", "pending")
	s.click(bob, msg, approve)
	s.click(carol, msg, approve)
	s.waitTS(msg.TS, "Applied")
	waitStatus("twokey/apply/staging", "success")
	var seq []string
	for _, st := range s.gh.Statuses("acme/infra") {
		if st.SHA == s.prs[2] {
			seq = append(seq, strings.TrimPrefix(st.Context, "twokey/")+"="+st.State)
		}
	}
	// Statuses are reconciled from the plan's current state, so a quick
	// step may be coalesced away; what must hold is their order.
	if !strings.HasPrefix(seq[0], "plan/staging=") || seq[len(seq)-1] != "apply/staging=success" {
		t.Fatalf("statuses out of order: %v", seq)
	}
	applying := false
	for i, st := range seq {
		if strings.HasPrefix(st, "apply/") {
			applying = true
		} else if applying {
			t.Fatalf("a plan status after the apply began: %v", seq)
		}
		if st == "apply/staging=success" && i != len(seq)-1 {
			t.Fatalf("statuses after success: %v", seq)
		}
	}
	comments = s.gh.Comments("acme/infra")
	if len(comments) != 2 || len(comments[1].Bodies) < 2 || comments[1].PR != 2 {
		t.Fatalf("want one comment on PR #2, edited in place: %+v", comments)
	}
}

// If the audit stream cannot be written, the apply does not start.
func TestAuditFailureBlocksApply(t *testing.T) {
	s := newStack(t)
	s.openPR(1, "web")
	s.startBot()
	s.slash(alice, "plan staging pr-1")
	msg := s.planMessage(1, "Plan ready for review")

	rdb := redis.NewClient(&redis.Options{Addr: s.redis.Addr})
	defer rdb.Close()
	// The stream key now holds a string: every XADD fails (WRONGTYPE).
	if err := rdb.Set(context.Background(), keyPrefix+"{audit}:stream", "not a stream", 0).Err(); err != nil {
		t.Fatal(err)
	}
	s.click(bob, msg, approve)
	s.click(carol, msg, approve)
	s.thread(msg, "audit record could not be written, so nothing was applied")
	pending := s.waitTS(msg.TS, "Plan ready for review")
	if len(pending.Buttons()) != 2 {
		t.Fatal("the plan did not stay pending")
	}
	if _, err := os.Stat(s.envDump()); err == nil {
		t.Fatal("terraform applied without an audit record")
	}
}

// After the plan store has let a plan go (its 30-day retention, or its
// key deleted), /tf show still tells the whole story, rebuilt from the
// audit record alone; an ID neither knows is "unknown".
func TestShowFromTheRecordAfterRetention(t *testing.T) {
	s := newStack(t)
	s.openPR(1, "web")
	s.startBot()
	s.slash(alice, "plan staging pr-1")
	first := s.planMessage(1, "Plan ready for review")
	voided := first.Buttons()[0].Value
	// An admin's unlock voids the first plan; a second one is applied.
	s.slash(erin, `unlock staging "try again"`)
	s.waitTS(first.TS, "unlocked by <@"+erin+">")
	s.slash(alice, "plan staging pr-1")
	msg := s.planMessage(1, "Plan ready for review")
	planID := msg.Buttons()[0].Value
	if planID == voided {
		t.Fatal("no second plan")
	}
	s.click(bob, msg, approve)
	s.waitTS(msg.TS, "more needed")
	s.click(carol, msg, approve)
	s.waitTS(msg.TS, "Applied")

	// What the store's retention does, done now: the plans' keys are gone.
	rdb := redis.NewClient(&redis.Options{Addr: s.redis.Addr})
	defer rdb.Close()
	ctx := context.Background()
	for _, id := range []string{voided, planID} {
		if n, err := rdb.Del(ctx, keyPrefix+"plan:{"+id+"}").Result(); err != nil || n != 1 {
			t.Fatalf("delete plan %s from the store: %d %v", id, n, err)
		}
	}
	// The runner's last events come just after the message says Applied.
	for deadline := time.Now().Add(waitFor); ; time.Sleep(50 * time.Millisecond) {
		msgs, err := rdb.XRange(ctx, keyPrefix+"{audit}:stream", "-", "+").Result()
		if err != nil {
			t.Fatal(err)
		}
		if slices.ContainsFunc(msgs, func(m redis.XMessage) bool {
			raw, _ := m.Values["event"].(string)
			return strings.Contains(raw, `"apply_finished"`) && strings.Contains(raw, planID)
		}) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no apply_finished event in the record")
		}
	}

	s.slash(dave, "show "+planID)
	show := s.ephemeral(dave, "Plan `"+planID+"`").Content()
	for _, want := range []string{"Rebuilt from the audit record", "infra/staging", "PR #1", "`" + s.prs[1][:7] + "`",
		"asked by <@" + alice + ">", "already applied", "<https://",
		"plan started · <@" + alice + ">", "plan finished", "add 1",
		"approval · <@" + bob + ">", "approval · <@" + carol + ">", "credential minted", "accessor", "credential revoked",
		"apply started", "apply finished", "result applied", "duration"} {
		if !strings.Contains(show, want) {
			t.Errorf("show from the record lacks %q:\n%s", want, show)
		}
	}
	if !regexp.MustCompile("\ndigest `[0-9a-f]{64}`\n").MatchString(show) {
		t.Errorf("show from the record lacks the plan's digest:\n%s", show)
	}
	last := -1
	for _, step := range []string{"plan started", "plan finished", "approval · <@" + bob + ">", "approval · <@" + carol + ">",
		"apply started", "apply finished"} {
		i := strings.Index(show, step)
		if i < last {
			t.Errorf("%q is out of time order:\n%s", step, show)
		}
		last = i
	}

	s.slash(dave, "show "+voided)
	void := s.ephemeral(dave, "Plan `"+voided+"`").Content()
	for _, want := range []string{"Rebuilt from the audit record", "asked by <@" + alice + ">", "— void\n",
		"invalidation · twokey · reason unlocked by", "try again"} {
		if !strings.Contains(void, want) {
			t.Errorf("show of the voided plan lacks %q:\n%s", want, void)
		}
	}

	s.slash(dave, "show p-zzzzzzzz")
	s.ephemeral(dave, "unknown to twokey")
}
