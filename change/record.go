package change

import (
	"context"
	"fmt"
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

// show answers `/tf show <plan-id>|<grant-id>`: the plan or grant and every
// event about it.
func (s *Service) Show(ctx context.Context, channel, user string, cmd commands.Show) error {
	var out strings.Builder
	var since time.Time
	if GrantIDRE.MatchString(cmd.PlanID) {
		g, err := s.getGrant(ctx, cmd.PlanID)
		if err != nil {
			return err
		}
		fmt.Fprintf(&out, "*Break-glass `%s`*: %s/%s for %s, asked by <@%s> — %s\n>%s\n", g.ID, g.Project, g.Env, Human(g.Duration),
			g.Requester, GrantWords(g), Escape(Clip(g.Reason, 500)))
		if g.Permalink != "" {
			fmt.Fprintf(&out, "<%s|The announcement>\n", g.Permalink)
		}
		since = g.CreatedAt
	} else {
		p, err := s.o.Store.Get(ctx, cmd.PlanID)
		if err != nil {
			return err
		}
		fmt.Fprintf(&out, "*Plan `%s`*: %s/%s, %s at `%s`, asked by <@%s> — %s\n", p.ID, p.Project, p.Env, Label(p), Short(p.SHA),
			p.Requester, StatusWords(p.Status))
		if p.Permalink != "" {
			fmt.Fprintf(&out, "<%s|The plan's message>\n", p.Permalink)
		}
		since = p.CreatedAt
	}
	events, err := s.o.History.Since(ctx, since.Add(-time.Minute))
	if err != nil {
		return err
	}
	for _, e := range events {
		if e.PlanID != cmd.PlanID {
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
		fmt.Fprintf(&out, "• %s · %s · %s", e.Time.UTC().Format("15:04:05"), what, who)
		for _, k := range []string{"result", "summary", "reason", "note", "accessor", "ttl", "add", "change", "destroy", "duration"} {
			if v := e.Detail[k]; v != "" {
				fmt.Fprintf(&out, " · %s %s", k, Escape(v))
			}
		}
		out.WriteString("\n")
	}
	s.tell(ctx, channel, user, Clip(out.String(), MaxSection))
	return nil
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
