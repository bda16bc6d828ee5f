package change

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/twokey/twokey/approvals"
	"github.com/twokey/twokey/audit"
	"github.com/twokey/twokey/commands"
	"github.com/twokey/twokey/ref"
	"github.com/twokey/twokey/runner"
)

// record appends an event caused by user (a Slack user ID; "" for twokey
// itself) about p, if there is one. It reports whether the event was
// written; a failure is logged.
func (s *Service) record(ctx context.Context, typ, user string, p *approvals.Plan, detail map[string]string) error {
	e := audit.Event{Type: typ, Detail: detail}
	if p != nil {
		e.Project, e.Env, e.PR, e.Ref, e.SHA = p.Project, p.Env, p.PR, p.Ref.String(), p.SHA
		e.PlanID, e.Digest, e.Fence, e.Permalink = p.ID, p.Digest, p.Fence, p.Permalink
	}
	return s.write(ctx, e, user)
}

// recordGrant appends a break-glass event: stage says which step of the
// grant's life it is.
func (s *Service) recordGrant(ctx context.Context, stage audit.Stage, user string, g approvals.BreakGlass, detail map[string]string) error {
	if detail == nil {
		detail = map[string]string{}
	}
	detail["stage"] = string(stage)
	return s.write(ctx, audit.Event{Type: audit.BreakGlass, Project: g.Project, Env: g.Env, PlanID: g.ID,
		Permalink: g.Permalink, Detail: detail}, user)
}

// write appends e, caused by user (a Slack user ID; "" for twokey itself).
func (s *Service) write(ctx context.Context, e audit.Event, user string) error {
	typ := e.Type
	e.Actor = audit.Actor{ID: "twokey", Name: "twokey"}
	if user != "" {
		e.Actor = audit.Actor{ID: user, Name: s.dir.Name(ctx, user)}
	}
	for k, v := range e.Detail {
		if v == "" {
			delete(e.Detail, k)
		}
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := s.o.Audit.Record(ctx, e); err != nil {
		s.log.Error("audit record not written", "type", typ, "plan_id", e.PlanID, "err", err)
		return err
	}
	return nil
}

// history answers `/tf history [project] <env> [n]`: the last n applies.
func (s *Service) History(ctx context.Context, channel, user string, cmd commands.History) error {
	proj, env, err := s.cfg.Resolve(cmd.Project, cmd.Env)
	if err != nil {
		return err
	}
	events, err := s.o.History.Newest(ctx, cmd.N, 20000, func(e audit.Event) bool {
		return e.Type == audit.ApplyFinished && e.Project == proj.Name && e.Env == env.Name
	})
	if err != nil {
		return err
	}
	key := runner.LockKey(proj.Name, env.Name)
	if len(events) == 0 {
		s.tell(ctx, channel, user, fmt.Sprintf("Nothing has been applied in *%s* yet.", key))
		return nil
	}
	var out strings.Builder
	fmt.Fprintf(&out, "*Last %d changes in %s*\n", len(events), key)
	for _, e := range events {
		what := "PR #" + fmt.Sprint(e.PR)
		if r, err := ref.Parse(e.Ref); err == nil && !r.IsZero() {
			what = r.Label()
		}
		requester, link := "?", ""
		if p, err := s.o.Store.Get(ctx, e.PlanID); err == nil {
			requester = "<@" + p.Requester + ">"
			if p.Permalink != "" {
				link = fmt.Sprintf(" · <%s|message>", p.Permalink)
			}
		}
		fmt.Fprintf(&out, "• %s · %s `%s` · plan `%s` · asked by %s · approved by %s · *%s* %s%s\n",
			e.Time.UTC().Format("Jan 2 15:04 MST"), what, Short(e.SHA), e.PlanID, requester,
			Mentions(strings.Split(e.Detail["approvers"], ",")), e.Detail["result"], Escape(e.Detail["summary"]), link)
	}
	s.tell(ctx, channel, user, Clip(out.String(), MaxSection))
	return nil
}

// The story of a plan or grant the store no longer holds is rebuilt from
// the audit record: its events are found by reading back through at most
// the newest storyScan events, and at most storyEvents of them are kept.
const (
	storyScan   = 100_000
	storyEvents = 1_000
)

// show answers `/tf show <plan-id>|<grant-id>`: the plan or grant and every
// event about it. One the store no longer holds (past its retention, or
// deleted) is told from the audit record alone.
func (s *Service) Show(ctx context.Context, channel, user string, cmd commands.Show) error {
	var out strings.Builder
	var since time.Time
	if GrantIDRE.MatchString(cmd.PlanID) {
		g, err := s.getGrant(ctx, cmd.PlanID)
		if errors.Is(err, ErrUnknownGrant) {
			return s.showFromRecord(ctx, channel, user, cmd.PlanID, err)
		}
		if err != nil {
			return err
		}
		grantHeader(&out, g, "")
		since = g.CreatedAt
	} else {
		p, err := s.o.Store.Get(ctx, cmd.PlanID)
		if errors.Is(err, approvals.ErrNotFound) {
			return s.showFromRecord(ctx, channel, user, cmd.PlanID, err)
		}
		if err != nil {
			return err
		}
		planHeader(&out, p, "")
		since = p.CreatedAt
	}
	events, err := s.o.History.Since(ctx, since.Add(-time.Minute))
	if err != nil {
		return err
	}
	events = slices.DeleteFunc(events, func(e audit.Event) bool { return e.PlanID != cmd.PlanID })
	writeStory(&out, events)
	s.tell(ctx, channel, user, Clip(out.String(), MaxSection))
	return nil
}

// showFromRecord tells the story of a plan or grant from its audit events
// alone; unknown is the answer when the record has none either.
func (s *Service) showFromRecord(ctx context.Context, channel, user, id string, unknown error) error {
	events, err := s.o.History.Newest(ctx, storyEvents, storyScan, func(e audit.Event) bool { return e.PlanID == id })
	if err != nil {
		return err
	}
	if len(events) == 0 {
		return unknown
	}
	slices.Reverse(events)
	var out strings.Builder
	what, whole := "plan", false
	if GrantIDRE.MatchString(id) {
		var g approvals.BreakGlass
		g, whole = grantFromRecord(id, events)
		grantHeader(&out, g, lastRecorded(g.Status != approvals.GrantEnded))
		what = "grant"
	} else {
		var p approvals.Plan
		p, whole = planFromRecord(id, events)
		planHeader(&out, p, lastRecorded(slices.Contains([]approvals.Status{approvals.StatusPlanning, approvals.StatusPending, approvals.StatusApplying}, p.Status)))
	}
	fmt.Fprintf(&out, "_Rebuilt from the audit record: the store no longer holds this %s._", what)
	if !whole || len(events) == storyEvents {
		fmt.Fprintf(&out, " _Its oldest events are not among the newest %d of the record, or were trimmed from it: `twokey audit export` has what the record kept._", storyScan)
	}
	out.WriteString("\n")
	writeStory(&out, events)
	s.tell(ctx, channel, user, Clip(out.String(), MaxSection))
	return nil
}

// lastRecorded qualifies a state the record left open: the store no
// longer holds it, so nothing more can happen to it.
func lastRecorded(open bool) string {
	if open {
		return " (as last recorded)"
	}
	return ""
}

// planHeader is a plan's first lines in /tf show; qualify follows its state.
func planHeader(out *strings.Builder, p approvals.Plan, qualify string) {
	asked := "?"
	if p.Requester != "" {
		asked = "<@" + p.Requester + ">"
	}
	state := StatusWords(p.Status)
	if p.Status == "" {
		state = "state unknown"
	}
	fmt.Fprintf(out, "*Plan `%s`*: %s/%s, %s at `%s`, asked by %s — %s%s\n", p.ID, p.Project, p.Env, Label(p), Short(p.SHA),
		asked, state, qualify)
	if p.Digest != "" {
		fmt.Fprintf(out, "digest `%s`\n", p.Digest)
	}
	if p.Permalink != "" {
		fmt.Fprintf(out, "<%s|The plan's message>\n", p.Permalink)
	}
}

// grantHeader is a break-glass grant's first lines in /tf show; qualify
// follows its state.
func grantHeader(out *strings.Builder, g approvals.BreakGlass, qualify string) {
	asked := "?"
	if g.Requester != "" {
		asked = "<@" + g.Requester + ">"
	}
	state := GrantWords(g)
	if g.Status == "" {
		state = "state unknown"
	}
	fmt.Fprintf(out, "*Break-glass `%s`*: %s/%s for %s, asked by %s — %s%s\n>%s\n", g.ID, g.Project, g.Env, Human(g.Duration),
		asked, state, qualify, Escape(Clip(g.Reason, 500)))
	if g.Permalink != "" {
		fmt.Fprintf(out, "<%s|The announcement>\n", g.Permalink)
	}
}

// writeStory writes one line per event, oldest first: when (with the date
// at the first event and whenever it changes), what, who, and the details
// a person reads. GitHub being brought up to date is left out: it is
// frequent, says nothing new, and would push the story past one message.
func writeStory(out *strings.Builder, events []audit.Event) {
	day := ""
	for _, e := range events {
		if e.Type == audit.GitHubUpdated {
			continue
		}
		who := e.Actor.Name
		if strings.HasPrefix(e.Actor.ID, "U") || strings.HasPrefix(e.Actor.ID, "W") {
			who = "<@" + e.Actor.ID + ">"
		}
		what := strings.ReplaceAll(e.Type, "_", " ")
		if e.Type == audit.BreakGlass {
			what = "break-glass " + e.Detail["stage"]
		}
		at := e.Time.UTC()
		when := at.Format("15:04:05")
		if d := at.Format("Jan 2 2006"); d != day {
			day, when = d, at.Format("Jan 2 2006 15:04:05")
		}
		fmt.Fprintf(out, "• %s · %s · %s", when, what, who)
		for _, k := range []string{"result", "summary", "reason", "note", "approvals", "overrides", "denied", "role", "accessor", "ttl",
			"add", "change", "destroy", "duration"} {
			if v := e.Detail[k]; v != "" {
				fmt.Fprintf(out, " · %s %s", k, Escape(v))
			}
		}
		out.WriteString("\n")
	}
}

// planFromRecord is what the record says of plan id, from its events
// oldest first: what, who asked, and the state its last event left it in.
// whole reports whether the record still holds the plan's start.
func planFromRecord(id string, events []audit.Event) (p approvals.Plan, whole bool) {
	p.ID = id
	for _, e := range events {
		p.Project, p.Env = cmp.Or(e.Project, p.Project), cmp.Or(e.Env, p.Env)
		p.PR, p.SHA = cmp.Or(e.PR, p.PR), cmp.Or(e.SHA, p.SHA)
		if r, err := ref.Parse(e.Ref); err == nil && !r.IsZero() {
			p.Ref = r
		}
		p.Digest, p.Permalink = cmp.Or(e.Digest, p.Digest), cmp.Or(e.Permalink, p.Permalink)
		switch e.Type {
		case audit.PlanStarted:
			p.Requester, p.Status, whole = e.Actor.ID, approvals.StatusPlanning, true
		case audit.PlanFinished:
			p.Status = approvals.Status(cmp.Or(e.Detail["result"], string(approvals.StatusPending)))
		case audit.PlanFailed:
			p.Status = approvals.StatusPlanFailed
		case audit.Invalidation:
			p.Status = approvals.Status(cmp.Or(e.Detail["status"], string(approvals.StatusInvalidated)))
		case audit.Rejection:
			p.Status = approvals.StatusRejected
		case audit.ApplyStarted:
			p.Status = approvals.StatusApplying
		case audit.ApplyFinished:
			switch e.Detail["result"] {
			case "applied":
				p.Status = approvals.StatusApplied
			case "interrupted":
				p.Status = approvals.StatusInterrupted
			default:
				p.Status = approvals.StatusFailed
			}
		}
	}
	return p, whole
}

// grantFromRecord is what the record says of break-glass grant id, from
// its events oldest first. whole reports whether the record still holds
// the request.
func grantFromRecord(id string, events []audit.Event) (g approvals.BreakGlass, whole bool) {
	g.ID = id
	for _, e := range events {
		g.Project, g.Env, g.Permalink = cmp.Or(e.Project, g.Project), cmp.Or(e.Env, g.Env), cmp.Or(e.Permalink, g.Permalink)
		if e.Type != audit.BreakGlass {
			continue
		}
		switch stage := audit.Stage(e.Detail["stage"]); stage {
		case audit.StageRequested:
			g.Requester, g.Reason, g.Status, whole = e.Actor.ID, e.Detail["reason"], approvals.GrantRequested, true
			g.Duration, _ = time.ParseDuration(e.Detail["duration"])
		case audit.StageApproved:
			g.Status = approvals.GrantMinting
		case audit.StageMinted:
			g.Status, g.MintedAt = approvals.GrantActive, e.Time
		case audit.StageDelivered:
			g.Delivered = true
		case audit.StageReviewed:
			g.Reviews = append(g.Reviews, approvals.Review{User: e.Actor.ID, At: e.Time})
		case audit.StageDenied, audit.StageLapsed, audit.StageFailed, audit.StageExpired, audit.StageRevoked, audit.StageCompromised:
			g.Status, g.Outcome = approvals.GrantEnded, approvals.Outcome(stage)
		}
	}
	return g, whole
}

// forgery records that state in Redis about p was not signed by a trusted
// key and was not acted on: loudly, in the log and in the record.
func (s *Service) forgery(ctx context.Context, p approvals.Plan, what string, err error) {
	detail := map[string]string{"what": what, "by": s.instance}
	if err != nil {
		detail["error"] = err.Error()
	}
	s.log.Error("forged state in Redis refused", "plan_id", p.ID, "env", p.Project+"/"+p.Env, "what", what, "err", err)
	_ = s.record(ctx, audit.Forgery, "", &p, detail)
}

// forgedGrant records a break-glass request whose terms in Redis are not
// what serve signed; nothing is minted for it.
func (s *Service) forgedGrant(ctx context.Context, g approvals.BreakGlass, err error) {
	s.log.Error("forged break-glass request in Redis refused", "grant", g.ID, "env", g.Project+"/"+g.Env, "err", err)
	_ = s.write(ctx, audit.Event{Type: audit.Forgery, Project: g.Project, Env: g.Env, PlanID: g.ID,
		Detail: map[string]string{"what": "break-glass request refused", "by": s.instance, "error": err.Error()}}, "")
}

// Command records a command as a person typed it.
func (s *Service) Command(ctx context.Context, user, channel, team, text string) {
	_ = s.record(ctx, audit.Command, user, nil, map[string]string{"text": Clip(text, 200), "channel": channel, "team": team})
}
