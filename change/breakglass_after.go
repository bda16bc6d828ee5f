package change

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/twokey/twokey/approvals"
	"github.com/twokey/twokey/audit"
	"github.com/twokey/twokey/config"
	"github.com/twokey/twokey/runner"
)

// After a grant: every bot process sweeps the open grants. Of several
// processes, the one whose compare-and-swap wins does each step.

// sweepGrants ends what has run out, keeps the countdown current, runs the
// drift check of ended grants and reminds about unreviewed ones.
func (s *Service) sweepGrants(ctx context.Context) {
	grants, err := s.o.Grants.OpenGrants(ctx)
	if err != nil {
		s.log.Warn("sweep: list break-glass grants", "err", err)
		return
	}
	now := s.o.Now()
	s.shownMu.Lock()
	for id := range s.shownLeft {
		if !slices.ContainsFunc(grants, func(g approvals.BreakGlass) bool { return g.ID == id && g.Status == approvals.GrantActive }) {
			delete(s.shownLeft, id)
		}
	}
	s.shownMu.Unlock()
	active := 0
	for _, g := range grants {
		if g.Status == approvals.GrantActive && now.Before(g.ExpiresAt) {
			active++
		}
	}
	s.stats.GrantsActive(active)
	for _, g := range grants {
		switch {
		case approvals.RequestLapsed(g, now):
			s.lapse(ctx, g)
		case approvals.MintStalled(g, now):
			s.failGrant(ctx, g, "the twokey process creating the token stopped; any token it made dies by its TTL", nil)
		case g.Status == approvals.GrantActive && !now.Before(g.ExpiresAt):
			s.expireGrant(ctx, g)
		case g.Status == approvals.GrantActive:
			s.countdown(ctx, g)
			if g.Delivered && g.UnwrappedAt.IsZero() && now.Before(g.WrapExpires) {
				s.watchUnwrap(ctx, g)
			}
		case g.Status == approvals.GrantEnded && g.HadToken():
			_, env, err := s.cfg.Resolve(g.Project, g.Env)
			if err != nil || env.BreakGlass == nil {
				continue
			}
			if _, err := approvals.StartDrift(g, s.instance, driftTimeout(env), now); err == nil {
				s.Go(func(ctx context.Context) { s.driftCheck(ctx, g) })
			}
			if approvals.RemindDue(g, env.BreakGlass.RemindEvery.D(), now) {
				s.remind(ctx, g, env.BreakGlass.RemindEvery.D())
			}
		}
	}
}

// driftTimeout: a drift check running longer than this was left by a
// process that stopped, and another takes it over.
func driftTimeout(env *config.Environment) time.Duration { return env.PlanTimeout.D() + time.Minute }

// expireGrant ends a grant whose token reached its TTL and confirms with
// Vault that the token is gone.
func (s *Service) expireGrant(ctx context.Context, g approvals.BreakGlass) {
	now := s.o.Now()
	g, err := s.mutateGrant(ctx, g.ID, func(cur approvals.BreakGlass) (approvals.BreakGlass, error) {
		if cur.Status != approvals.GrantActive {
			return cur, approvals.ErrUnchanged
		}
		return approvals.EndGrant(cur, approvals.OutcomeExpired, "", "", now)
	})
	if err != nil || g.Outcome != approvals.OutcomeExpired || !g.EndedAt.Equal(now) {
		return // another process did it
	}
	gone := s.confirmGone(ctx, g)
	s.log.Warn("break-glass expired", "grant", g.ID, "confirmed", gone)
	_ = s.recordGrant(ctx, audit.StageExpired, "", g, map[string]string{"confirmed_gone": fmt.Sprint(gone)})
	s.refreshGrant(ctx, g)
	s.postGrant(ctx, g, ":hourglass: The token expired. "+goneWords(gone)+" Checking for drift next.")
	s.Go(func(ctx context.Context) { s.driftCheck(ctx, g) })
}

// watchUnwrap tells the security channel and the requester when the
// wrapping token is used: if it was not the requester, they know at once.
func (s *Service) watchUnwrap(ctx context.Context, g approvals.BreakGlass) {
	alive, err := s.o.Runner.TokenAlive(ctx, g.Project, g.Env, g.WrapAccessor)
	if err != nil || alive {
		return
	}
	now := s.o.Now()
	g, err = s.mutateGrant(ctx, g.ID, func(cur approvals.BreakGlass) (approvals.BreakGlass, error) {
		if !cur.UnwrappedAt.IsZero() || cur.Status != approvals.GrantActive {
			return cur, approvals.ErrUnchanged
		}
		cur.UnwrappedAt, cur.UpdatedAt = now, now
		return cur, nil
	})
	if err != nil || !g.UnwrappedAt.Equal(now) {
		return
	}
	_ = s.recordGrant(ctx, audit.StageUnwrapped, "", g, nil)
	at := now.UTC().Format("15:04:05 MST")
	s.postGrant(ctx, g, fmt.Sprintf(":key: The token was unwrapped at %s.", at))
	s.dmText(ctx, g.Requester, fmt.Sprintf(":key: Your break-glass token `%s` was unwrapped at %s. If that was not you, "+
		"press *Unwrap failed* above, or `/tf breakglass revoke %s`.", g.ID, at, g.ID))
}

// countdown re-renders an active grant's announcement when the minutes
// left change.
func (s *Service) countdown(ctx context.Context, g approvals.BreakGlass) {
	left := MinutesLeft(g, s.o.Now())
	s.shownMu.Lock()
	shown, ok := s.shownLeft[g.ID]
	s.shownLeft[g.ID] = left
	s.shownMu.Unlock()
	if !ok || shown != left {
		s.refreshGrant(ctx, g)
	}
}

// driftCheck plans the default branch of the grant's environment with its
// read-only plan credentials and reports whether live infrastructure now
// differs from the code; then it asks for the review.
func (s *Service) driftCheck(ctx context.Context, g approvals.BreakGlass) {
	proj, env, err := s.cfg.Resolve(g.Project, g.Env)
	if err != nil {
		return
	}
	now := s.o.Now()
	g, err = s.mutateGrant(ctx, g.ID, func(cur approvals.BreakGlass) (approvals.BreakGlass, error) {
		return approvals.StartDrift(cur, s.instance, driftTimeout(env), now)
	})
	if err != nil || g.Drift.State != approvals.DriftRunning || g.Drift.Runner != s.instance || !g.Drift.StartedAt.Equal(now) {
		return // not ours to run
	}
	log := s.log.With("grant", g.ID, "env", g.Project+"/"+g.Env)
	log.Info("drift check after break-glass")
	var res runner.DriftResult
	target, err := s.o.Target(proj.Name, env.Name)
	var rev runner.Revision
	if err == nil {
		rev, err = s.o.Runner.Resolve(ctx, proj.Repo, runner.Ref{})
	}
	if err == nil {
		res, err = s.o.Runner.Drift(ctx, runner.DriftJob{ID: g.ID, Rev: rev, Target: target})
	}
	if errors.Is(err, runner.ErrDetached) {
		return // shutting down; another process takes it over
	}
	g, merr := s.mutateGrant(ctx, g.ID, func(cur approvals.BreakGlass) (approvals.BreakGlass, error) {
		return approvals.DriftChecked(cur, rev.SHA, res.Summary, err, s.o.Now())
	})
	if merr != nil {
		log.Error("record drift check", "err", merr)
		return
	}
	detail := map[string]string{"result": string(g.Drift.State), "sha": rev.SHA,
		"add": fmt.Sprint(res.Summary.Add), "change": fmt.Sprint(res.Summary.Change), "destroy": fmt.Sprint(res.Summary.Destroy)}
	if err != nil {
		detail["error"] = runner.Redact(err.Error())
		log.Warn("drift check failed", "err", err)
	}
	if g.Drift.State == approvals.DriftClean || g.Drift.State == approvals.DriftFound {
		s.stats.Drift(g.Project, g.Env, g.Drift.State == approvals.DriftFound)
	}
	_ = s.recordGrant(ctx, audit.StageDrift, "", g, detail)
	s.refreshGrant(ctx, g)
	s.postGrant(ctx, g, DriftWords(g)+"\n"+ReviewAsk(g))
	if res.Text != "" && g.MessageTS != "" {
		s.attach(ctx, grantThread(g), "drift-"+g.ID+".txt",
			fmt.Sprintf("drift check of %s/%s at %s", g.Project, g.Env, Short(rev.SHA)), res.Text)
	}
}

func DriftWords(g approvals.BreakGlass) string {
	at := "the default branch"
	if g.Drift.SHA != "" {
		at += " at `" + Short(g.Drift.SHA) + "`"
	}
	switch g.Drift.State {
	case approvals.DriftClean:
		return ":white_check_mark: *No drift*: live infrastructure matches " + at + "."
	case approvals.DriftFound:
		s := g.Drift.Summary
		return fmt.Sprintf(":warning: *Drift*: live infrastructure differs from %s — terraform would add %d, change %d, destroy %d. "+
			"Bring the manual change into code with a pull request.\n%s", at, s.Add, s.Change, s.Destroy, ResourceList(s.Resources))
	case approvals.DriftFailed:
		return ":x: The drift check could not run: " + Escape(Clip(g.Drift.Error, 500))
	}
	return ""
}

func ReviewAsk(g approvals.BreakGlass) string {
	return fmt.Sprintf("*Review needed*: two people other than <@%s> (approvers of %s or admins) click *Reviewed* above.", g.Requester, g.Env)
}

// remind announces an unreviewed grant again.
func (s *Service) remind(ctx context.Context, g approvals.BreakGlass, every time.Duration) {
	now := s.o.Now()
	g, err := s.mutateGrant(ctx, g.ID, func(cur approvals.BreakGlass) (approvals.BreakGlass, error) {
		return approvals.Reminded(cur, every, now)
	})
	if err != nil || !g.RemindedAt.Equal(now) {
		return
	}
	link := ""
	if g.Permalink != "" {
		link = fmt.Sprintf(" (<%s|the grant>)", g.Permalink)
	}
	text := fmt.Sprintf(":rotating_light: Break-glass `%s` in *%s* by <@%s> ended %s ago and is still *unreviewed* (%d of %d reviews)%s.",
		g.ID, g.Env, g.Requester, Ago(s.o.Now(), g.EndedAt), len(g.Reviews), approvals.ReviewsNeeded, link)
	if err := s.n.AskReview(ctx, g, text); err != nil {
		s.log.Error("remind about an unreviewed grant", "grant", g.ID, "err", err)
		return
	}
	_ = s.recordGrant(ctx, audit.StageReminded, "", g, nil)
}

// mayReview: an approver of the environment or a twokey admin.
func (s *Service) mayReview(ctx context.Context, user string, env *config.Environment) (bool, error) {
	return s.anyOf(ctx, user, env.Approvers, s.cfg.Admins)
}

// MayReview answers a Reviewed click: whether user may review grant id
// now, before the front end asks for the review's note.
func (s *Service) MayReview(ctx context.Context, user, id string) (approvals.BreakGlass, error) {
	g, env, err := s.grantEnv(ctx, id)
	if err != nil {
		return g, err
	}
	if _, err := approvals.ReviewGrant(g, user, true, "", s.o.Now()); err != nil {
		return g, err // not reviewable, the requester, or already reviewed
	}
	if ok, err := s.mayReview(ctx, user, env); !ok {
		if err != nil {
			return g, err
		}
		return g, ErrNotReviewer
	}
	return g, nil
}

// review records a submitted review.
func (s *Service) Review(ctx context.Context, user, id, note string) error {
	g, env, err := s.grantEnv(ctx, id)
	if err != nil {
		return err
	}
	authorized, err := s.mayReview(ctx, user, env)
	if err != nil {
		return err
	}
	g, err = s.mutateGrant(ctx, id, func(cur approvals.BreakGlass) (approvals.BreakGlass, error) {
		return approvals.ReviewGrant(cur, user, authorized, note, s.o.Now())
	})
	if errors.Is(err, approvals.ErrNotAuthorized) {
		return ErrNotReviewer
	}
	if err != nil {
		return err
	}
	_ = s.recordGrant(ctx, audit.StageReviewed, user, g, map[string]string{"note": Clip(note, 500),
		"reviews": fmt.Sprintf("%d of %d", len(g.Reviews), approvals.ReviewsNeeded)})
	s.refreshGrant(ctx, g)
	line := fmt.Sprintf(":eyes: Reviewed by <@%s>", user)
	if note != "" {
		line += ": " + Escape(note)
	}
	if g.Reviewed() {
		line += fmt.Sprintf("\n:white_check_mark: Review complete (%d of %d). Grant `%s` is closed.", len(g.Reviews), approvals.ReviewsNeeded, g.ID)
	}
	s.postGrant(ctx, g, line)
	return nil
}
