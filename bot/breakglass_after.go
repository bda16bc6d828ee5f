package bot

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/slack-go/slack"

	"github.com/twokey/twokey/approvals"
	"github.com/twokey/twokey/config"
	"github.com/twokey/twokey/runner"
)

// After a grant: every bot process sweeps the open grants. Of several
// processes, the one whose compare-and-swap wins does each step.

// sweepGrants ends what has run out, keeps the countdown current, runs the
// drift check of ended grants and reminds about unreviewed ones.
func (b *Bot) sweepGrants(ctx context.Context) {
	grants, err := b.o.Grants.OpenGrants(ctx)
	if err != nil {
		b.log.Warn("sweep: list break-glass grants", "err", err)
		return
	}
	now := b.o.Now()
	b.shownMu.Lock()
	for id := range b.shownLeft {
		if !slices.ContainsFunc(grants, func(g approvals.BreakGlass) bool { return g.ID == id && g.Status == approvals.GrantActive }) {
			delete(b.shownLeft, id)
		}
	}
	b.shownMu.Unlock()
	for _, g := range grants {
		switch {
		case approvals.RequestLapsed(g, now):
			b.lapse(ctx, g)
		case approvals.MintStalled(g, now):
			b.failGrant(ctx, g, "the twokey process creating the token stopped; any token it made dies by its TTL", nil)
		case g.Status == approvals.GrantActive && !now.Before(g.ExpiresAt):
			b.expireGrant(ctx, g)
		case g.Status == approvals.GrantActive:
			b.countdown(ctx, g)
			if g.Delivered && g.UnwrappedAt.IsZero() && now.Before(g.WrapExpires) {
				b.watchUnwrap(ctx, g)
			}
		case g.Status == approvals.GrantEnded && g.HadToken():
			_, env, err := b.cfg.Resolve(g.Project, g.Env)
			if err != nil || env.BreakGlass == nil {
				continue
			}
			if _, err := approvals.StartDrift(g, b.instance, driftTimeout(env), now); err == nil {
				b.background(func(ctx context.Context) { b.driftCheck(ctx, g) })
			}
			if approvals.RemindDue(g, env.BreakGlass.RemindEvery.D(), now) {
				b.remind(ctx, g, env.BreakGlass.RemindEvery.D())
			}
		}
	}
}

// driftTimeout: a drift check running longer than this was left by a
// process that stopped, and another takes it over.
func driftTimeout(env *config.Environment) time.Duration { return env.PlanTimeout.D() + time.Minute }

// expireGrant ends a grant whose token reached its TTL and confirms with
// Vault that the token is gone.
func (b *Bot) expireGrant(ctx context.Context, g approvals.BreakGlass) {
	now := b.o.Now()
	g, err := b.mutateGrant(ctx, g.ID, func(cur approvals.BreakGlass) (approvals.BreakGlass, error) {
		if cur.Status != approvals.GrantActive {
			return cur, approvals.ErrUnchanged
		}
		return approvals.EndGrant(cur, approvals.OutcomeExpired, "", "", now)
	})
	if err != nil || g.Outcome != approvals.OutcomeExpired || !g.EndedAt.Equal(now) {
		return // another process did it
	}
	gone := b.confirmGone(ctx, g)
	b.log.Warn("break-glass expired", "grant", g.ID, "confirmed", gone)
	_ = b.recordGrant(ctx, "expired", "", g, map[string]string{"confirmed_gone": fmt.Sprint(gone)})
	b.refreshGrant(ctx, g)
	b.postGrant(ctx, g, ":hourglass: The token expired. "+goneWords(gone)+" Checking for drift next.")
	b.background(func(ctx context.Context) { b.driftCheck(ctx, g) })
}

// watchUnwrap tells the security channel and the requester when the
// wrapping token is used: if it was not the requester, they know at once.
func (b *Bot) watchUnwrap(ctx context.Context, g approvals.BreakGlass) {
	alive, err := b.o.Runner.TokenAlive(ctx, g.Project, g.Env, g.WrapAccessor)
	if err != nil || alive {
		return
	}
	now := b.o.Now()
	g, err = b.mutateGrant(ctx, g.ID, func(cur approvals.BreakGlass) (approvals.BreakGlass, error) {
		if !cur.UnwrappedAt.IsZero() || cur.Status != approvals.GrantActive {
			return cur, approvals.ErrUnchanged
		}
		cur.UnwrappedAt, cur.UpdatedAt = now, now
		return cur, nil
	})
	if err != nil || !g.UnwrappedAt.Equal(now) {
		return
	}
	_ = b.recordGrant(ctx, "unwrapped", "", g, nil)
	at := now.UTC().Format("15:04:05 MST")
	b.postGrant(ctx, g, fmt.Sprintf(":key: The token was unwrapped at %s.", at))
	b.dmText(ctx, g.Requester, fmt.Sprintf(":key: Your break-glass token `%s` was unwrapped at %s. If that was not you, "+
		"press *Unwrap failed* above, or `/tf breakglass revoke %s`.", g.ID, at, g.ID))
}

// countdown re-renders an active grant's announcement when the minutes
// left change.
func (b *Bot) countdown(ctx context.Context, g approvals.BreakGlass) {
	left := minutesLeft(g, b.o.Now())
	b.shownMu.Lock()
	shown, ok := b.shownLeft[g.ID]
	b.shownLeft[g.ID] = left
	b.shownMu.Unlock()
	if !ok || shown != left {
		b.refreshGrant(ctx, g)
	}
}

// driftCheck plans the default branch of the grant's environment with its
// read-only plan credentials and reports whether live infrastructure now
// differs from the code; then it asks for the review.
func (b *Bot) driftCheck(ctx context.Context, g approvals.BreakGlass) {
	proj, env, err := b.cfg.Resolve(g.Project, g.Env)
	if err != nil {
		return
	}
	now := b.o.Now()
	g, err = b.mutateGrant(ctx, g.ID, func(cur approvals.BreakGlass) (approvals.BreakGlass, error) {
		return approvals.StartDrift(cur, b.instance, driftTimeout(env), now)
	})
	if err != nil || g.Drift.State != approvals.DriftRunning || g.Drift.Runner != b.instance || !g.Drift.StartedAt.Equal(now) {
		return // not ours to run
	}
	log := b.log.With("grant", g.ID, "env", g.Project+"/"+g.Env)
	log.Info("drift check after break-glass")
	var res runner.DriftResult
	target, err := b.o.Target(proj.Name, env.Name)
	var rev runner.Revision
	if err == nil {
		rev, err = b.o.Runner.Resolve(ctx, proj.Repo, runner.Ref{})
	}
	if err == nil {
		res, err = b.o.Runner.Drift(ctx, runner.DriftJob{ID: g.ID, Rev: rev, Target: target})
	}
	if errors.Is(err, runner.ErrDetached) {
		return // shutting down; another process takes it over
	}
	g, merr := b.mutateGrant(ctx, g.ID, func(cur approvals.BreakGlass) (approvals.BreakGlass, error) {
		return approvals.DriftChecked(cur, rev.SHA, res.Summary, err, b.o.Now())
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
	_ = b.recordGrant(ctx, "drift", "", g, detail)
	b.refreshGrant(ctx, g)
	b.postGrant(ctx, g, driftWords(g)+"\n"+reviewAsk(g))
	if res.Text != "" && g.MessageTS != "" {
		b.uploadText(ctx, g.Channel, g.MessageTS, "drift-"+g.ID+".txt",
			fmt.Sprintf("drift check of %s/%s at %s", g.Project, g.Env, short(rev.SHA)), res.Text)
	}
}

func driftWords(g approvals.BreakGlass) string {
	at := "the default branch"
	if g.Drift.SHA != "" {
		at += " at `" + short(g.Drift.SHA) + "`"
	}
	switch g.Drift.State {
	case approvals.DriftClean:
		return ":white_check_mark: *No drift*: live infrastructure matches " + at + "."
	case approvals.DriftFound:
		s := g.Drift.Summary
		return fmt.Sprintf(":warning: *Drift*: live infrastructure differs from %s — terraform would add %d, change %d, destroy %d. "+
			"Bring the manual change into code with a pull request.\n%s", at, s.Add, s.Change, s.Destroy, resourceList(s.Resources))
	case approvals.DriftFailed:
		return ":x: The drift check could not run: " + escape(clip(g.Drift.Error, 500))
	}
	return ""
}

func reviewAsk(g approvals.BreakGlass) string {
	return fmt.Sprintf("*Review needed*: two people other than <@%s> (approvers of %s or admins) click *Reviewed* above.", g.Requester, g.Env)
}

// remind announces an unreviewed grant again.
func (b *Bot) remind(ctx context.Context, g approvals.BreakGlass, every time.Duration) {
	now := b.o.Now()
	g, err := b.mutateGrant(ctx, g.ID, func(cur approvals.BreakGlass) (approvals.BreakGlass, error) {
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
		g.ID, g.Env, g.Requester, ago(b.o.Now(), g.EndedAt), len(g.Reviews), approvals.ReviewsNeeded, link)
	review := slack.NewButtonBlockElement(actionBGReview, g.ID, plain("Reviewed…")).WithStyle(slack.StylePrimary)
	if _, _, err := b.api.PostMessageContext(ctx, g.Channel, slack.MsgOptionText(text, false), slack.MsgOptionBlocks(
		slack.NewSectionBlock(mrkdwn(text), nil, nil), slack.NewActionBlock("twokey_bg_actions", review))); err != nil {
		b.log.Error("remind about an unreviewed grant", "grant", g.ID, "err", err)
		return
	}
	_ = b.recordGrant(ctx, "reminded", "", g, nil)
}

// mayReview: an approver of the environment or a twokey admin.
func (b *Bot) mayReview(ctx context.Context, user string, env *config.Environment) (bool, error) {
	return b.anyOf(ctx, user, env.Approvers, b.cfg.Admins)
}

// openReview answers a Reviewed click: the review form, with a note field.
func (b *Bot) openReview(ctx context.Context, channel, user, id, trigger string) error {
	g, env, err := b.grantEnv(ctx, id)
	if err != nil {
		return err
	}
	if _, err := approvals.ReviewGrant(g, user, true, "", b.o.Now()); err != nil {
		return err // not reviewable, the requester, or already reviewed
	}
	if ok, err := b.mayReview(ctx, user, env); !ok {
		if err != nil {
			return err
		}
		return errNotReviewer
	}
	if _, err := b.api.OpenViewContext(ctx, trigger, b.reviewModal(g, channel)); err != nil {
		return fmt.Errorf("open the review form: %w", err)
	}
	return nil
}

// review records a submitted review.
func (b *Bot) review(ctx context.Context, user, id, note string) error {
	g, env, err := b.grantEnv(ctx, id)
	if err != nil {
		return err
	}
	authorized, err := b.mayReview(ctx, user, env)
	if err != nil {
		return err
	}
	g, err = b.mutateGrant(ctx, id, func(cur approvals.BreakGlass) (approvals.BreakGlass, error) {
		return approvals.ReviewGrant(cur, user, authorized, note, b.o.Now())
	})
	if errors.Is(err, approvals.ErrNotAuthorized) {
		return errNotReviewer
	}
	if err != nil {
		return err
	}
	_ = b.recordGrant(ctx, "reviewed", user, g, map[string]string{"note": clip(note, 500),
		"reviews": fmt.Sprintf("%d of %d", len(g.Reviews), approvals.ReviewsNeeded)})
	b.refreshGrant(ctx, g)
	line := fmt.Sprintf(":eyes: Reviewed by <@%s>", user)
	if note != "" {
		line += ": " + escape(note)
	}
	if g.Reviewed() {
		line += fmt.Sprintf("\n:white_check_mark: Review complete (%d of %d). Grant `%s` is closed.", len(g.Reviews), approvals.ReviewsNeeded, g.ID)
	}
	b.postGrant(ctx, g, line)
	return nil
}

// uploadText puts text in a thread as a file.
func (b *Bot) uploadText(ctx context.Context, channel, ts, name, title, text string) {
	text = runner.Redact(text)
	if strings.TrimSpace(text) == "" {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	if _, err := b.api.UploadFileContext(ctx, slack.UploadFileParameters{
		Content: text, FileSize: len(text), Filename: name, Title: title, Channel: channel, ThreadTimestamp: ts,
	}); err != nil {
		b.log.Error("upload file", "name", name, "err", err)
	}
}
