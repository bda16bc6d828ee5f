package change

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/twokey/twokey/audit"
	"github.com/twokey/twokey/commands"
	"github.com/twokey/twokey/config"
	"github.com/twokey/twokey/ref"
	"github.com/twokey/twokey/runner"
)

// DriftReport is what a drift check found: the default branch's head was
// planned against the environment's live infrastructure.
type DriftReport struct {
	Project, Env string
	// Scope is how people name the environment (project/env with several
	// projects).
	Scope   string
	SHA     string
	Drifted bool
	// Summary and Resources say what differs (when Drifted).
	Summary   string
	Resources []string
	// LastApplied says who last applied there, and when; empty if nobody has.
	LastApplied string
	// Text is the plan, redacted, for a file in the thread.
	Text string
}

// DriftNotifier shows a drift report with a way to plan a fix
// (Options.Drift); without one the report is a note.
type DriftNotifier interface {
	ShowDrift(ctx context.Context, channel string, r DriftReport) (Posted, error)
}

// Drift answers `/tf drift [project] <env>`: a drift check now, reported
// in the channel.
func (s *Service) Drift(ctx context.Context, channel, user string, cmd commands.Drift) error {
	proj, env, err := s.cfg.Resolve(cmd.Project, cmd.Env)
	if err != nil {
		return err
	}
	if len(env.Channels) > 0 && !slices.Contains(env.Channels, channel) {
		return &ChannelError{Env: env.Name, Allowed: env.Channels}
	}
	s.tell(ctx, channel, user, fmt.Sprintf("Checking *%s* for drift: planning the default branch's head …", s.scope(proj, env)))
	return s.checkDrift(ctx, proj, env, channel, user, false, time.Time{})
}

// ScheduledDrift runs the drift check of an environment scheduled for
// tick. Every replica's scheduler calls it at the same tick; the first to
// take the tick's lease runs it, and ran says whether this one did.
func (s *Service) ScheduledDrift(ctx context.Context, project, envName string, tick time.Time) (ran bool, err error) {
	proj, env, err := s.cfg.Resolve(project, envName)
	if err != nil {
		return false, err
	}
	if env.Drift == nil {
		return false, fmt.Errorf("%s has no drift schedule", s.scope(proj, env))
	}
	first, err := s.o.Dedup.First(ctx, fmt.Sprintf("drift:%s/%s:%d", proj.Name, env.Name, tick.Unix()), DedupTTL)
	if err != nil || !first {
		return false, err
	}
	return true, s.checkDrift(ctx, proj, env, driftChannel(env), "", env.Drift.Quiet, tick)
}

// driftChannel is where an environment's scheduled drift reports go.
func driftChannel(env *config.Environment) string {
	if env.Drift != nil && env.Drift.Channel != "" {
		return env.Drift.Channel
	}
	if len(env.Channels) > 0 {
		return env.Channels[0]
	}
	return ""
}

// checkDrift plans the default branch's head in a workspace of its own,
// sandboxed, with no environment lock, and reports: drift with what
// differs and a way to plan a fix; no drift as one line, or nothing when
// quiet. user is who asked ("" for the schedule). Every check is recorded.
// tick is the scheduled time the check is for (zero on demand).
func (s *Service) checkDrift(ctx context.Context, proj *config.Project, env *config.Environment, channel, user string, quiet bool, tick time.Time) error {
	log := s.log.With("env", proj.Name+"/"+env.Name, "user", user)
	trigger := "schedule"
	if user != "" {
		trigger = "command"
	}
	var (
		res runner.DriftResult
		rev runner.Revision
	)
	target, err := s.o.Target(proj.Name, env.Name)
	if err == nil {
		rev, err = s.o.Runner.Resolve(ctx, proj.Repo, runner.Ref{})
	}
	if err == nil {
		res, err = s.o.Runner.Drift(ctx, runner.DriftJob{ID: "d-" + newPlanID()[2:], Rev: rev, Target: target})
	}
	if errors.Is(err, runner.ErrDetached) {
		return nil
	}
	detail := map[string]string{"trigger": trigger, "sha": rev.SHA, "channel": channel,
		"add": fmt.Sprint(res.Summary.Add), "change": fmt.Sprint(res.Summary.Change), "destroy": fmt.Sprint(res.Summary.Destroy)}
	if !tick.IsZero() {
		detail["tick"] = tick.UTC().Format(time.RFC3339)
	}
	ev := audit.Event{Type: audit.DriftCheck, Project: proj.Name, Env: env.Name, SHA: rev.SHA, Detail: detail}
	if err != nil {
		detail["result"], detail["error"] = "failed", runner.Redact(err.Error())
		log.Warn("drift check failed", "err", err)
		_ = s.write(ctx, ev, user)
		if channel != "" {
			_ = s.n.Note(ctx, Thread{Channel: channel}, fmt.Sprintf(":warning: The drift check of *%s* could not run: %s",
				s.scope(proj, env), s.n.Describe(err)))
		}
		return nil
	}
	drifted := res.Summary.HasChanges()
	detail["result"] = "clean"
	if drifted {
		detail["result"] = "drift"
	}
	_ = s.write(ctx, ev, user)
	s.stats.Drift(proj.Name, env.Name, drifted)
	log.Info("drift check", "result", detail["result"], "sha", rev.SHA)
	if channel == "" {
		return nil
	}
	if !drifted {
		if !quiet {
			_ = s.n.Note(ctx, Thread{Channel: channel}, fmt.Sprintf(":white_check_mark: No drift in *%s*: live infrastructure matches `%s` of the default branch.",
				s.scope(proj, env), Short(rev.SHA)))
		}
		return nil
	}
	r := DriftReport{Project: proj.Name, Env: env.Name, Scope: s.scope(proj, env), SHA: rev.SHA, Drifted: true,
		Summary: res.Summary.Counts(), LastApplied: s.lastApplied(ctx, proj.Name, env.Name), Text: res.Text}
	for _, rc := range res.Summary.Resources {
		r.Resources = append(r.Resources, rc.Address)
	}
	if s.o.Drift != nil {
		posted, err := s.o.Drift.ShowDrift(ctx, channel, r)
		if err != nil {
			return err
		}
		s.attach(ctx, posted.Thread, "drift-"+env.Name+".txt", fmt.Sprintf("drift check of %s at %s", r.Scope, Short(rev.SHA)), res.Text)
		return nil
	}
	return s.n.Note(ctx, Thread{Channel: channel}, DriftReportWords(r))
}

// DriftReportWords says a drift report in plain words.
func DriftReportWords(r DriftReport) string {
	var b strings.Builder
	fmt.Fprintf(&b, ":warning: *Drift in %s*: live infrastructure differs from `%s` of the default branch (%s).", r.Scope, Short(r.SHA), r.Summary)
	for i, a := range r.Resources {
		if i == 20 {
			fmt.Fprintf(&b, "\n• … and %d more", len(r.Resources)-i)
			break
		}
		fmt.Fprintf(&b, "\n• `%s`", a)
	}
	if r.LastApplied != "" {
		b.WriteString("\nLast applied: " + r.LastApplied)
	} else {
		b.WriteString("\nNothing has been applied here through twokey.")
	}
	return b.String()
}

// lastApplied says who last applied in an environment, and when.
func (s *Service) lastApplied(ctx context.Context, project, env string) string {
	events, err := s.o.History.Newest(ctx, 1, 20000, func(e audit.Event) bool {
		return e.Type == audit.ApplyFinished && e.Project == project && e.Env == env
	})
	if err != nil || len(events) == 0 {
		return ""
	}
	e := events[0]
	what := fmt.Sprintf("PR #%d", e.PR)
	if r, err := ref.Parse(e.Ref); err == nil && !r.IsZero() {
		what = r.Label()
	}
	who := ""
	if p, err := s.o.Store.Get(ctx, e.PlanID); err == nil {
		who = " asked by <@" + p.Requester + ">,"
	}
	return fmt.Sprintf("%s `%s` (plan `%s`),%s approved by %s, %s, on %s", what, Short(e.SHA), e.PlanID, who,
		Mentions(strings.Split(e.Detail["approvers"], ",")), e.Detail["result"], e.Time.UTC().Format("Jan 2 15:04 MST"))
}

// PlanFix starts the normal plan flow for the default branch's head in
// an environment where drift was found (the report's Plan a fix button).
func (s *Service) PlanFix(ctx context.Context, channel, user, project, env string) error {
	proj, _, err := s.cfg.Resolve(project, env)
	if err != nil {
		return err
	}
	rev, err := s.o.Runner.Resolve(ctx, proj.Repo, runner.Ref{})
	if err != nil {
		return err
	}
	return s.Plan(ctx, channel, user, commands.Plan{Project: project, Env: env, Ref: commands.Ref{SHA: rev.SHA}})
}

// scope names an environment as people do: project/env with several
// projects.
func (s *Service) scope(proj *config.Project, env *config.Environment) string {
	if len(s.cfg.Projects) > 1 {
		return proj.Name + "/" + env.Name
	}
	return env.Name
}
