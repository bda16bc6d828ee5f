package change

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twokey/twokey/approvals"
	"github.com/twokey/twokey/audit"
	"github.com/twokey/twokey/commands"
)

// memAudit is an audit record in memory, read as redisaudit reads it.
type memAudit struct {
	mu     sync.Mutex
	events []audit.Event // oldest first
	scans  []int         // the scan bound of each Newest
}

func (m *memAudit) Record(_ context.Context, e audit.Event) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.events = append(m.events, e)
	return nil
}

func (m *memAudit) Newest(_ context.Context, n, scan int, match func(audit.Event) bool) ([]audit.Event, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.scans = append(m.scans, scan)
	var out []audit.Event
	for i := len(m.events) - 1; i >= 0 && i >= len(m.events)-scan && len(out) < n; i-- {
		if match(m.events[i]) {
			out = append(out, m.events[i])
		}
	}
	return out, nil
}

func (m *memAudit) Since(_ context.Context, since time.Time) ([]audit.Event, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []audit.Event
	for _, e := range m.events {
		if !e.Time.Before(since) {
			out = append(out, e)
		}
	}
	return out, nil
}

// told keeps what the service told people.
type told struct {
	quiet
	mu    sync.Mutex
	texts []string
}

func (t *told) Tell(_ context.Context, _, _, text string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.texts = append(t.texts, text)
}

func (t *told) last() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.texts) == 0 {
		return ""
	}
	return t.texts[len(t.texts)-1]
}

// showHarness is a service whose audit record is rec and whose answers
// are kept.
func showHarness(t *testing.T) (*harness, *memAudit, *told) {
	t.Helper()
	h := newHarness(t)
	rec, tl := &memAudit{}, &told{}
	h.svc.o.History, h.svc.n = rec, tl
	return h, rec, tl
}

const (
	storySHA    = "9f1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c"
	storyDigest = "sha256:5b0e1c7d"
	storyLink   = "https://acme.slack.com/archives/CDEPLOY/p1796000000000100"
)

// appliedStory is the record of plan id asked by alice, overridden by dave,
// approved by bob and carol, applied; it runs over midnight.
func appliedStory(id string, at time.Time) []audit.Event {
	subject := func(typ, actor string, d time.Duration, detail map[string]string) audit.Event {
		e := audit.Event{Time: at.Add(d), Type: typ, Actor: audit.Actor{ID: actor, Name: strings.ToLower(actor[1:])},
			Project: "infra", Env: "staging", PR: 42, Ref: "pr-42", SHA: storySHA, PlanID: id, Fence: 7, Detail: detail}
		if actor == "twokey" || actor == "serve" {
			e.Actor = audit.Actor{ID: "twokey", Name: actor}
		}
		if typ != audit.PlanStarted {
			e.Digest = storyDigest
		}
		if typ != audit.ApplyStarted && typ != audit.ApplyFinished && !strings.HasPrefix(typ, "credential") {
			e.Permalink = storyLink
		}
		return e
	}
	return []audit.Event{
		subject(audit.PlanStarted, pAlice, 0, map[string]string{"title": "Add a cache"}),
		subject(audit.CredentialMinted, "serve", time.Second, map[string]string{"role": "plan", "accessor": "acc-plan", "ttl": "15m0s"}),
		subject(audit.CredentialRevoked, "serve", 20*time.Second, nil),
		subject(audit.PlanFinished, "twokey", 21*time.Second, map[string]string{"add": "1", "change": "0", "destroy": "2", "result": "pending"}),
		subject(audit.PolicyOverride, pDave, 10*time.Minute, map[string]string{"overrides": "1 of 1", "denied": "no-destroy"}),
		subject(audit.Approval, pBob, 20*time.Minute, map[string]string{"approvals": "1 of 2"}),
		subject(audit.Approval, pCarol, 2*time.Hour, map[string]string{"approvals": "2 of 2"}),
		subject(audit.ApplyStarted, "serve", 2*time.Hour+time.Second, map[string]string{"approvers": pBob + "," + pCarol}),
		subject(audit.CredentialMinted, "serve", 2*time.Hour+2*time.Second, map[string]string{"role": "apply", "accessor": "acc-apply", "ttl": "1h0m0s"}),
		subject(audit.CredentialRevoked, "serve", 2*time.Hour+40*time.Second, nil),
		subject(audit.ApplyFinished, "serve", 2*time.Hour+41*time.Second, map[string]string{"result": "applied",
			"summary": "1 added, 0 changed, 2 destroyed", "duration": "39.5s"}),
	}
}

// A plan the store no longer holds is told from the record alone: what,
// who asked, the state it ended in, and every event in time order, with
// the date where it changes; another plan's events are not in it.
func TestShowRebuildsAPlanFromTheRecord(t *testing.T) {
	h, rec, tl := showHarness(t)
	const id, other = "p-abcdefgh", "p-stuvwxyz"
	at := time.Date(2026, 9, 30, 22, 30, 0, 0, time.UTC)
	story := appliedStory(id, at)
	// Another plan's and unrelated events interleave with the story.
	for i, e := range story {
		_ = rec.Record(context.Background(), e)
		noise := appliedStory(other, e.Time.Add(time.Millisecond))[i%3]
		_ = rec.Record(context.Background(), noise)
		_ = rec.Record(context.Background(), audit.Event{Time: e.Time.Add(2 * time.Millisecond), Type: audit.Command,
			Actor: audit.Actor{ID: pErin}, Detail: map[string]string{"text": "show " + id}})
	}

	if err := h.svc.Show(context.Background(), pChannel, pErin, commands.Show{PlanID: id}); err != nil {
		t.Fatal(err)
	}
	out := tl.last()
	for _, want := range []string{
		"*Plan `" + id + "`*: infra/staging, PR #42 at `9f1c2d3`, asked by <@" + pAlice + "> — already applied\n",
		"digest `" + storyDigest + "`", "<" + storyLink + "|The plan's message>",
		"Rebuilt from the audit record: the store no longer holds this plan.",
		"• Sep 30 2026 22:30:00 · plan started · <@" + pAlice + ">\n",
		"credential minted · serve · role plan · accessor acc-plan · ttl 15m0s",
		"plan finished · twokey · result pending · add 1 · change 0 · destroy 2",
		"policy override · <@" + pDave + "> · overrides 1 of 1 · denied no-destroy",
		"approval · <@" + pBob + "> · approvals 1 of 2",
		"• Oct 1 2026 00:30:00 · approval · <@" + pCarol + "> · approvals 2 of 2",
		"• 00:30:01 · apply started · serve",
		"apply finished · serve · result applied · summary 1 added, 0 changed, 2 destroyed · duration 39.5s",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("show lacks %q:\n%s", want, out)
		}
	}
	if n := strings.Count(out, "\n• "); n != len(story) {
		t.Errorf("%d event lines, want %d:\n%s", n, len(story), out)
	}
	if strings.Contains(out, "not among the newest") || strings.Contains(out, "command") {
		t.Errorf("a whole story said to be partial, or another event in it:\n%s", out)
	}
	last := -1
	for _, step := range []string{"plan started", "plan finished", "policy override", "approval · <@" + pBob, "approval · <@" + pCarol,
		"apply started", "apply finished"} {
		i := strings.Index(out, step)
		if i < last {
			t.Errorf("%q is out of time order:\n%s", step, out)
		}
		last = i
	}
	if len(rec.scans) != 1 || rec.scans[0] != storyScan {
		t.Errorf("scans %v, want one read back through at most %d events", rec.scans, storyScan)
	}
}

// What each story's last events leave the plan as; an open state is
// qualified, since the store no longer holds the plan.
func TestShowFromTheRecordEndState(t *testing.T) {
	at := time.Date(2026, 10, 1, 9, 0, 0, 0, time.UTC)
	base := appliedStory("p-abcdefgh", at)
	with := func(n int, extra ...audit.Event) []audit.Event {
		out := append([]audit.Event(nil), base[:n]...)
		for i, e := range extra {
			e.PlanID, e.Project, e.Env, e.PR, e.SHA, e.Time = "p-abcdefgh", "infra", "staging", 42, storySHA, at.Add(time.Hour+time.Duration(i)*time.Second)
			out = append(out, e)
		}
		return out
	}
	for _, tc := range []struct {
		name   string
		events []audit.Event
		want   string
	}{
		{"waiting", with(4), "— waiting for approvals (as last recorded)\n"},
		{"no changes", with(3, audit.Event{Type: audit.PlanFinished, Detail: map[string]string{"result": "no_changes"}}), "— a plan without changes\n"},
		{"plan failed", with(1, audit.Event{Type: audit.PlanFailed, Detail: map[string]string{"status": "plan_failed", "reason": "terraform plan failed"}}),
			"— a failed plan\n"},
		{"expired", with(6, audit.Event{Type: audit.Invalidation, Detail: map[string]string{"status": "invalidated", "reason": "expired"}}),
			"— void\n"},
		{"rejected", with(4, audit.Event{Type: audit.Rejection, Actor: audit.Actor{ID: pBob}}), "— rejected\n"},
		{"applying", with(8), "— being applied (as last recorded)\n"},
		{"failed", with(8, audit.Event{Type: audit.ApplyFinished, Detail: map[string]string{"result": "failed"}}), "— applied and failed\n"},
		{"interrupted", with(8, audit.Event{Type: audit.ApplyFinished, Detail: map[string]string{"result": "interrupted"}}), "— interrupted\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, rec, tl := showHarness(t)
			rec.events = tc.events
			if err := h.svc.Show(context.Background(), pChannel, pErin, commands.Show{PlanID: "p-abcdefgh"}); err != nil {
				t.Fatal(err)
			}
			if out := tl.last(); !strings.Contains(out, tc.want) || !strings.Contains(out, "Rebuilt from the audit record") {
				t.Errorf("want %q:\n%s", tc.want, out)
			}
		})
	}
}

// The scan is bounded: a plan whose start lies further back than storyScan
// events is told from what was read, and says its start is missing.
func TestShowFromTheRecordIsBounded(t *testing.T) {
	h, rec, tl := showHarness(t)
	const id = "p-abcdefgh"
	at := time.Date(2026, 10, 1, 9, 0, 0, 0, time.UTC)
	story := appliedStory(id, at)
	rec.events = append(rec.events, story[:4]...)
	for i := range storyScan {
		rec.events = append(rec.events, audit.Event{Time: at.Add(time.Minute), Type: audit.Command, Actor: audit.Actor{ID: pErin},
			Detail: map[string]string{"text": fmt.Sprint("history staging ", i)}})
	}
	rec.events = append(rec.events, audit.Event{Time: at.Add(time.Hour), Type: audit.Invalidation, Actor: audit.Actor{ID: "twokey", Name: "twokey"},
		Project: "infra", Env: "staging", PR: 42, SHA: storySHA, PlanID: id, Detail: map[string]string{"status": "invalidated", "reason": "expired"}})
	if err := h.svc.Show(context.Background(), pChannel, pErin, commands.Show{PlanID: id}); err != nil {
		t.Fatal(err)
	}
	out := tl.last()
	for _, want := range []string{"asked by ? — void", fmt.Sprintf("not among the newest %d of the record", storyScan),
		"invalidation · twokey · reason expired"} {
		if !strings.Contains(out, want) {
			t.Errorf("show lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "plan started") {
		t.Errorf("an event beyond the bound was read:\n%s", out)
	}
}

// A break-glass grant the store no longer holds is told from the record.
func TestShowRebuildsAGrantFromTheRecord(t *testing.T) {
	h, rec, tl := showHarness(t)
	const id = "bg-abcdefgh"
	at := time.Date(2026, 10, 1, 3, 0, 0, 0, time.UTC)
	stage := func(s audit.Stage, actor string, d time.Duration, detail map[string]string) audit.Event {
		if detail == nil {
			detail = map[string]string{}
		}
		detail["stage"] = string(s)
		who := audit.Actor{ID: actor, Name: "someone"}
		if actor == "twokey" {
			who.Name = "twokey"
		}
		return audit.Event{Time: at.Add(d), Type: audit.BreakGlass, Actor: who, Project: "infra", Env: "prod", PlanID: id,
			Permalink: storyLink, Detail: detail}
	}
	rec.events = []audit.Event{
		stage(audit.StageRequested, pAlice, 0, map[string]string{"reason": "database is down", "duration": "1h0m0s", "approvals": "1"}),
		stage(audit.StageApproved, pBob, time.Minute, nil),
		stage(audit.StageMinted, "twokey", time.Minute+time.Second, map[string]string{"accessor": "acc-bg"}),
		stage(audit.StageDelivered, "twokey", time.Minute+2*time.Second, nil),
		stage(audit.StageExpired, "twokey", time.Hour+time.Minute, nil),
		stage(audit.StageReviewed, pBob, 5*time.Hour, map[string]string{"note": "restarted the primary"}),
		stage(audit.StageReviewed, pCarol, 6*time.Hour, map[string]string{"note": "ok"}),
	}
	if err := h.svc.Show(context.Background(), pChannel, pErin, commands.Show{PlanID: id}); err != nil {
		t.Fatal(err)
	}
	out := tl.last()
	for _, want := range []string{
		"*Break-glass `" + id + "`*: infra/prod for 1h, asked by <@" + pAlice + "> — expired, reviewed\n>database is down\n",
		"<" + storyLink + "|The announcement>", "Rebuilt from the audit record: the store no longer holds this grant.",
		"break-glass approved · <@" + pBob + ">", "break-glass minted · twokey · accessor acc-bg", "break-glass expired",
		"break-glass reviewed · <@" + pCarol + "> · note ok",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("show lacks %q:\n%s", want, out)
		}
	}
}

// Neither the store nor the record knows the ID: the answer is as before.
func TestShowUnknownInStoreAndRecord(t *testing.T) {
	h, rec, _ := showHarness(t)
	rec.events = appliedStory("p-abcdefgh", time.Date(2026, 10, 1, 9, 0, 0, 0, time.UTC))
	if err := h.svc.Show(context.Background(), pChannel, pErin, commands.Show{PlanID: "p-zzzzzzzz"}); !errors.Is(err, approvals.ErrNotFound) {
		t.Errorf("unknown plan: %v, want ErrNotFound", err)
	}
	if err := h.svc.Show(context.Background(), pChannel, pErin, commands.Show{PlanID: "bg-zzzzzzzz"}); !errors.Is(err, ErrUnknownGrant) {
		t.Errorf("unknown grant: %v, want ErrUnknownGrant", err)
	}
}

// A plan the store still holds is told from the store and its events, as
// before: not "rebuilt".
func TestShowFromTheStore(t *testing.T) {
	h, rec, tl := showHarness(t)
	h.run.head = storySHA
	cmd, err := commands.Parse("plan staging pr-1")
	if err != nil {
		t.Fatal(err)
	}
	if err := h.svc.Plan(context.Background(), pChannel, pAlice, cmd.(commands.Plan)); err != nil {
		t.Fatal(err)
	}
	id := h.openPlan(t)
	p, err := h.store.Get(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	rec.events = appliedStory(id, p.CreatedAt)
	if err := h.svc.Show(context.Background(), pChannel, pErin, commands.Show{PlanID: id}); err != nil {
		t.Fatal(err)
	}
	out := tl.last()
	if !strings.Contains(out, "asked by <@"+pAlice+"> — waiting for approvals\n") || strings.Contains(out, "Rebuilt") ||
		!strings.Contains(out, "apply finished") || len(rec.scans) != 0 {
		t.Errorf("show of a stored plan:\n%s", out)
	}
}
