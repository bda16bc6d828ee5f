package bot

import (
	"context"
	"crypto/rand"
	"encoding/base32"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/slack-go/slack"

	"github.com/twokey/twokey/approvals"
	"github.com/twokey/twokey/audit"
	"github.com/twokey/twokey/commands"
	"github.com/twokey/twokey/config"
	"github.com/twokey/twokey/runner"
)

func (b *Bot) handleCommand(ctx context.Context, envelope string, c slack.SlashCommand) {
	log := b.log.With("user", c.UserID, "channel", c.ChannelID)
	if !b.firstTime(ctx, "envelope:"+envelope, c.ChannelID, c.UserID) {
		return
	}
	log.Info("command", "text", clip(c.Text, 200))
	_ = b.record(ctx, audit.Command, c.UserID, nil, map[string]string{"text": clip(c.Text, 200), "channel": c.ChannelID,
		"team": c.TeamID})
	if !b.ours(c.TeamID, c.EnterpriseID) {
		b.fail(ctx, c.ChannelID, c.UserID, errOtherWorkspace)
		return
	}
	cmd, err := commands.Parse(c.Text)
	if err == nil {
		switch cmd := cmd.(type) {
		case commands.Help:
			b.tell(ctx, c.ChannelID, c.UserID, commands.Usage)
		case commands.Status:
			err = b.status(ctx, c.ChannelID, c.UserID, cmd)
		case commands.Plan:
			err = b.plan(ctx, c.ChannelID, c.UserID, cmd)
		case commands.Unlock:
			err = b.unlock(ctx, c.ChannelID, c.UserID, cmd)
		case commands.History:
			err = b.history(ctx, c.ChannelID, c.UserID, cmd)
		case commands.Show:
			err = b.show(ctx, c.ChannelID, c.UserID, cmd)
		case commands.BreakGlass:
			err = b.breakGlass(ctx, c.ChannelID, c.UserID, cmd)
		case commands.BreakGlassForm:
			if _, verr := b.api.OpenViewContext(ctx, c.TriggerID, b.requestModal(c.ChannelID)); verr != nil {
				err = fmt.Errorf("open the break-glass form: %w", verr)
			}
		case commands.BreakGlassRevoke:
			err = b.revokeGrant(ctx, c.ChannelID, c.UserID, cmd)
		}
	}
	if err != nil {
		b.fail(ctx, c.ChannelID, c.UserID, err, "user", c.UserID)
	}
}

// click is a button press, decoded and checked. id is the plan's or, for a
// break-glass button, the grant's.
type click struct {
	user, team, enterprise, channel string
	action, id, trigger             string
}

var (
	planIDRE  = regexp.MustCompile(`^p-[a-z2-9]{8}$`)
	grantIDRE = regexp.MustCompile(`^bg-[a-z2-9]{8}$`)
	slackID   = regexp.MustCompile(`^[A-Z0-9]{2,32}$`)
)

// buttons maps each action to the IDs its value must be.
var buttons = map[string]*regexp.Regexp{
	actionApprove: planIDRE, actionReject: planIDRE,
	actionBGApprove: grantIDRE, actionBGDeny: grantIDRE, actionBGReview: grantIDRE, actionBGUnwrapFailed: grantIDRE,
}

// clickOf decodes a block_actions payload into the one button press twokey
// acts on. Anything else — other interaction types, several actions,
// unknown buttons, malformed IDs — is refused.
func clickOf(cb slack.InteractionCallback) (click, error) {
	if cb.Type != slack.InteractionTypeBlockActions {
		return click{}, fmt.Errorf("%w: interaction type %q", errUnknownAction, cb.Type)
	}
	if len(cb.ActionCallback.BlockActions) != 1 || cb.ActionCallback.BlockActions[0] == nil {
		return click{}, fmt.Errorf("%w: %d actions", errUnknownAction, len(cb.ActionCallback.BlockActions))
	}
	a := cb.ActionCallback.BlockActions[0]
	c := click{user: cb.User.ID, team: cb.Team.ID, enterprise: cb.Enterprise.ID, channel: cb.Channel.ID,
		action: a.ActionID, id: a.Value, trigger: cb.TriggerID}
	if c.channel == "" {
		c.channel = cb.Container.ChannelID
	}
	if cb.User.TeamID != "" && cb.User.TeamID != c.team {
		return click{}, errOtherWorkspace
	}
	idRE, known := buttons[c.action]
	switch {
	case !known:
		return click{}, fmt.Errorf("%w: %q", errUnknownAction, clip(c.action, 40))
	case !idRE.MatchString(c.id):
		return click{}, fmt.Errorf("%w: %q on %q", errUnknownAction, clip(c.id, 40), c.action)
	case !slackID.MatchString(c.user), !slackID.MatchString(c.channel), !slackID.MatchString(c.team):
		return click{}, fmt.Errorf("%w: malformed user, channel or team", errUnknownAction)
	}
	return c, nil
}

func (b *Bot) handleInteraction(ctx context.Context, envelope string, cb slack.InteractionCallback) {
	if cb.Type != slack.InteractionTypeBlockActions {
		return
	}
	c, err := clickOf(cb)
	if err != nil {
		b.log.Warn("refused interaction", "user", cb.User.ID, "err", err)
		if cb.User.ID != "" && cb.Channel.ID != "" {
			b.fail(ctx, cb.Channel.ID, cb.User.ID, err)
		}
		return
	}
	if !b.firstTime(ctx, "envelope:"+envelope, c.channel, c.user) {
		return
	}
	if !b.ours(c.team, c.enterprise) {
		b.fail(ctx, c.channel, c.user, errOtherWorkspace)
		return
	}
	switch c.action {
	case actionApprove:
		err = b.approve(ctx, c.channel, c.user, c.id)
	case actionReject:
		err = b.reject(ctx, c.channel, c.user, c.id)
	case actionBGApprove:
		err = b.approveGrant(ctx, c.channel, c.user, c.id)
	case actionBGDeny:
		err = b.denyGrant(ctx, c.channel, c.user, c.id)
	case actionBGReview:
		err = b.openReview(ctx, c.channel, c.user, c.id, c.trigger)
	case actionBGUnwrapFailed:
		err = b.unwrapFailed(ctx, c.channel, c.user, c.id)
	}
	if err != nil {
		b.fail(ctx, c.channel, c.user, err, "user", c.user, "id", c.id, "action", c.action)
	}
}

// clickKey identifies one person's press of one button on one plan. A plan
// whose apply could not start counts a new attempt, so pressing Approve again
// then is a new press: the retry.
func clickKey(p approvals.Plan, action, user string) string {
	return fmt.Sprintf("click:%s:%s:%s:%d", p.ID, action, user, p.Attempts)
}

// forgetOnError lets a click be pressed again when it did nothing — a
// refusal or a transient fault — so that it never swallows a later press
// that should count (the user was added to the group meanwhile, say).
func (b *Bot) forgetOnError(ctx context.Context, key string, err *error) {
	if *err == nil {
		return
	}
	if ferr := b.o.Dedup.Forget(context.WithoutCancel(ctx), key); ferr != nil {
		b.log.Warn("forget click", "key", key, "err", ferr)
	}
}

// firstTime reports whether this is the first delivery of key, telling the
// user when the state store cannot say (nothing is done then).
func (b *Bot) firstTime(ctx context.Context, key, channel, user string) bool {
	first, err := b.o.Dedup.First(ctx, key, DedupTTL)
	if err != nil {
		b.log.Error("state store unavailable", "key", key, "err", err)
		b.fail(ctx, channel, user, fmt.Errorf("%w: %w", errStateStore, err))
		return false
	}
	if !first {
		b.log.Info("duplicate delivery ignored", "key", key, "user", user)
	}
	return first
}

// ours reports whether a command or click comes from the configured
// workspace (and Enterprise Grid organization, if one is configured).
func (b *Bot) ours(team, enterprise string) bool {
	want := b.cfg.Slack.TeamID
	if want == "" {
		want = b.teamID
	}
	if team != want {
		return false
	}
	return b.cfg.Slack.EnterpriseID == "" || enterprise == b.cfg.Slack.EnterpriseID
}

// plan runs `/tf plan`: resolve the PR, take the environment lock, post the
// message, plan, and show the result with buttons.
func (b *Bot) plan(ctx context.Context, channel, user string, cmd commands.Plan) error {
	proj, env, err := b.cfg.Resolve(cmd.Project, cmd.Env)
	if err != nil {
		return err
	}
	if len(env.Channels) > 0 && !slices.Contains(env.Channels, channel) {
		return &channelError{env: env.Name, allowed: env.Channels}
	}
	if !env.Planners.Empty() {
		ok, err := b.dir.includes(ctx, user, env.Planners)
		if !ok && err != nil {
			return fmt.Errorf("%w: %w", errMembership, err)
		}
		if !ok {
			return errNotPlanner
		}
	}
	rev, err := b.o.Runner.Resolve(ctx, proj.Repo, runnerRef(cmd.Ref))
	if err != nil {
		return err
	}
	if err := b.promoted(ctx, proj, env, rev.SHA); err != nil {
		return err
	}
	id, now := newPlanID(), b.o.Now()
	holder := runner.Holder{User: user, PR: rev.PR, Ref: cmd.Ref.Label(), PlanID: id, Since: now}
	lease, err := b.o.Locks.Acquire(ctx, runner.LockKey(proj.Name, env.Name), holder, env.LockTTL.D())
	var locked *runner.LockedError
	if errors.As(err, &locked) && locked.Holder.Ref == holder.Ref {
		lease, err = b.replan(ctx, locked.Holder, holder, user, env.LockTTL.D())
	}
	if err != nil {
		return err
	}
	log := b.log.With("env", proj.Name+"/"+env.Name, "ref", cmd.Ref.String(), "plan_id", id, "user", user, "fence", lease.Fence)
	p, err := approvals.New(approvals.Request{
		ID: id, Project: proj.Name, Env: env.Name, PR: rev.PR, Ref: cmd.Ref.String(), SHA: rev.SHA, Title: rev.Title, URL: rev.URL,
		Requester: user, Channel: channel, Fence: lease.Fence, LockOwner: lease.Owner,
		Required: env.RequiredApprovals, Protected: *env.Protected, TTL: env.PlanTTL.D(),
	}, now)
	if err == nil {
		p, err = b.o.Store.Create(ctx, p)
	}
	if err != nil {
		b.release(lease)
		return err
	}
	b.dirty(ctx, p.ID)
	text, blocks := b.planMessage(p)
	text = fmt.Sprintf("planning %s for %s (%s) …", env.Name, cmd.Ref.Label(), short(rev.SHA))
	_, ts, err := b.api.PostMessageContext(ctx, channel, slack.MsgOptionText(text, false), slack.MsgOptionBlocks(blocks...))
	if err != nil {
		b.finish(ctx, p, approvals.StatusInvalidated, "could not post to Slack")
		return fmt.Errorf("post plan message: %w", err)
	}
	permalink, err := b.api.GetPermalinkContext(ctx, &slack.PermalinkParameters{Channel: channel, Ts: ts})
	if err != nil {
		log.Warn("no permalink for the plan message", "err", err)
	}
	if p, err = b.mutate(ctx, p.ID, func(p approvals.Plan) (approvals.Plan, error) {
		p.MessageTS, p.Permalink = ts, permalink
		return p, nil
	}); err != nil {
		b.release(lease)
		return err
	}
	log.Info("planning", "sha", rev.SHA)
	_ = b.record(ctx, audit.PlanStarted, user, &p, map[string]string{"title": rev.Title})

	target, err := b.o.Target(proj.Name, env.Name)
	if err != nil {
		b.finish(ctx, p, approvals.StatusPlanFailed, "the environment's configuration is unreadable")
		return err
	}
	res, err := b.o.Runner.Plan(ctx, runner.PlanJob{PlanID: p.ID, Rev: rev, Lease: lease, Target: target})
	if errors.Is(err, runner.ErrDetached) {
		log.Warn("stopped waiting for the plan; another replica completes it", "err", err)
		return nil
	}
	return b.planned(ctx, p, res, err)
}

// planned records a finished plan — by the replica that waited for it, or
// by a sweeper that found its result — and shows it with buttons.
func (b *Bot) planned(ctx context.Context, p approvals.Plan, res runner.PlanResult, planErr error) error {
	log := b.log.With("plan_id", p.ID, "env", p.Project+"/"+p.Env)
	_, env, err := b.cfg.Resolve(p.Project, p.Env)
	if err != nil {
		return err
	}
	if planErr != nil {
		log.Warn("plan failed", "err", planErr)
		if b.finish(ctx, p, approvals.StatusPlanFailed, planFailure(planErr)) {
			b.fail(ctx, p.Channel, p.Requester, planErr, "plan_id", p.ID)
		}
		return nil
	}
	p, err = b.mutate(ctx, p.ID, func(p approvals.Plan) (approvals.Plan, error) {
		p, err := approvals.Planned(p, res.Digest, res.Summary, env.PlanTTL.D(), b.o.Now())
		if err != nil {
			return p, err
		}
		return b.o.Notary.Seal(p)
	})
	if err != nil {
		// Rejected while planning: the reject already released the lock.
		_ = b.o.Runner.Discard(context.WithoutCancel(ctx), p.ID)
		return err
	}
	lease := leaseOf(p)
	_ = b.record(ctx, audit.PlanFinished, "", &p, map[string]string{"add": fmt.Sprint(res.Summary.Add),
		"change": fmt.Sprint(res.Summary.Change), "destroy": fmt.Sprint(res.Summary.Destroy), "result": string(p.Status)})
	b.uploadPlan(ctx, p, res.Text)
	if p.Status == approvals.StatusNoChanges {
		b.release(lease)
		_ = b.o.Runner.Discard(context.WithoutCancel(ctx), p.ID)
		b.refresh(ctx, p)
		return nil
	}
	// The pending plan holds the environment until it is applied, rejected
	// or expires.
	if err := b.o.Locks.Refresh(ctx, lease, p.ExpiresAt.Sub(b.o.Now())); err != nil {
		b.finish(ctx, p, approvals.StatusInvalidated, "the environment lock was lost while planning")
		return err
	}
	log.Info("plan ready", "digest", p.Digest, "add", res.Summary.Add, "change", res.Summary.Change, "destroy", res.Summary.Destroy)
	b.refresh(ctx, p)
	return nil
}

// replan replaces the pending plan of the same pull request: its approvals
// are void, and the lock passes to the new plan with a new fence in one
// step, so no other plan can slip in between.
func (b *Bot) replan(ctx context.Context, held, holder runner.Holder, user string, ttl time.Duration) (runner.Lease, error) {
	old, err := b.o.Store.Get(ctx, held.PlanID)
	if err != nil {
		return runner.Lease{}, err
	}
	reason := fmt.Sprintf("replaced by a new plan of %s requested by <@%s>; its approvals no longer count", label(old), user)
	old, err = b.mutate(ctx, old.ID, func(cur approvals.Plan) (approvals.Plan, error) {
		if cur.Status != approvals.StatusPending {
			// Planning or applying: the environment is busy, not replaceable.
			return cur, &runner.LockedError{Key: runner.LockKey(cur.Project, cur.Env), Holder: held}
		}
		return approvals.End(cur, approvals.StatusInvalidated, reason, b.o.Now())
	})
	if err != nil {
		return runner.Lease{}, err
	}
	_ = b.o.Runner.Discard(context.WithoutCancel(ctx), old.ID)
	b.refresh(ctx, old)
	b.post(ctx, old, ":recycle: "+reason+".")
	lease, err := b.o.Locks.Takeover(ctx, leaseOf(old), holder, ttl)
	if errors.Is(err, runner.ErrLockLost) {
		// It expired meanwhile: take it afresh.
		lease, err = b.o.Locks.Acquire(ctx, leaseOf(old).Key, holder, ttl)
	}
	b.log.Info("replanning", "replaced", old.ID, "ref", old.Ref, "user", user)
	return lease, err
}

// approve counts an Approve click and starts the apply on quorum.
func (b *Bot) approve(ctx context.Context, channel, user, planID string) (err error) {
	p, err := b.o.Store.Get(ctx, planID)
	if err != nil {
		return err
	}
	key := clickKey(p, actionApprove, user)
	if !b.firstTime(ctx, key, channel, user) {
		return nil // a double-click, or Slack delivering the same click twice
	}
	defer b.forgetOnError(ctx, key, &err)
	_, env, err := b.cfg.Resolve(p.Project, p.Env)
	if err != nil {
		return err
	}
	authorized, derr := b.dir.includes(ctx, user, env.Approvers)
	if !authorized && derr != nil && user != p.Requester {
		return fmt.Errorf("%w: %w", errMembership, derr)
	}
	var res approvals.Result
	p, err = b.mutate(ctx, planID, func(cur approvals.Plan) (approvals.Plan, error) {
		next, r, err := b.o.Notary.Approve(cur, user, authorized, b.o.Now())
		res = r
		if err == nil && r.Duplicate && r.Forged == 0 {
			return cur, approvals.ErrUnchanged
		}
		return next, err
	})
	if res.Forged > 0 || errors.Is(err, approvals.ErrForged) {
		b.forgery(ctx, p, fmt.Sprintf("%d approval(s) without a trusted signature found and not counted", res.Forged), err)
	}
	if errors.Is(err, approvals.ErrExpired) {
		b.expire(ctx, p)
		return err
	}
	if err != nil {
		return err
	}
	b.log.Info("approval", "plan_id", p.ID, "user", user, "counted", res.Counted, "quorum", res.Quorum)
	if res.Counted {
		_ = b.record(ctx, audit.Approval, user, &p, map[string]string{
			"approvals": fmt.Sprintf("%d of %d", len(approvals.Approvers(p)), p.Required)})
		b.refresh(ctx, p)
	}
	if res.Duplicate && !res.Quorum {
		b.tell(ctx, channel, user, "You already approved this plan; it still needs "+
			fmt.Sprint(approvals.Missing(p))+" more.")
	}
	if res.Quorum {
		return b.apply(ctx, p.ID, channel, user)
	}
	return nil
}

// reject ends a pending plan and frees the environment.
func (b *Bot) reject(ctx context.Context, channel, user, planID string) (err error) {
	p, err := b.o.Store.Get(ctx, planID)
	if err != nil {
		return err
	}
	_, env, err := b.cfg.Resolve(p.Project, p.Env)
	if err != nil {
		return err
	}
	key := clickKey(p, actionReject, user)
	if !b.firstTime(ctx, key, channel, user) {
		return nil
	}
	defer b.forgetOnError(ctx, key, &err)
	authorized := false
	if user != p.Requester {
		ok, derr := b.dir.includes(ctx, user, env.Approvers)
		if !ok && derr != nil {
			return fmt.Errorf("%w: %w", errMembership, derr)
		}
		authorized = ok
	}
	p, err = b.mutate(ctx, planID, func(cur approvals.Plan) (approvals.Plan, error) {
		return approvals.Reject(cur, user, authorized, "", b.o.Now())
	})
	if err != nil {
		return err
	}
	b.log.Info("rejected", "plan_id", p.ID, "user", user)
	_ = b.record(ctx, audit.Rejection, user, &p, nil)
	b.ended(ctx, p, "")
	return nil
}

// apply moves a plan with quorum to applying — a compare-and-swap that only
// one process wins — and runs it.
func (b *Bot) apply(ctx context.Context, planID, channel, actor string) error {
	var grant approvals.Grant
	p, err := b.mutate(ctx, planID, func(cur approvals.Plan) (approvals.Plan, error) {
		next, g, err := b.o.Notary.BeginApply(cur, b.o.Now())
		grant = g
		return next, err
	})
	if errors.Is(err, approvals.ErrForged) {
		b.forgery(ctx, p, "apply refused", err)
	}
	var se *approvals.StateError
	if errors.As(err, &se) && se.Status == approvals.StatusApplying {
		return nil // another click or process is applying it
	}
	if errors.Is(err, approvals.ErrExpired) {
		b.expire(ctx, p)
		return err
	}
	if err != nil {
		return err
	}
	log := b.log.With("env", p.Project+"/"+p.Env, "pr", p.PR, "plan_id", p.ID, "fence", p.Fence)
	proj, env, err := b.cfg.Resolve(p.Project, p.Env)
	if err != nil {
		b.abort(ctx, p, grant, "configuration changed")
		return err
	}
	b.refresh(ctx, p)

	// The ref must still name the commit that was planned and approved, and
	// that commit must still have been through the environments before.
	ref, err := commands.ParseRef(p.Ref)
	if err != nil {
		b.abort(ctx, p, grant, "unreadable ref")
		return err
	}
	rev, err := b.o.Runner.Resolve(ctx, proj.Repo, runnerRef(ref))
	switch {
	case errors.Is(err, runner.ErrSource):
		b.abort(ctx, p, grant, "GitHub unavailable: head commit not confirmed")
		return err
	case err != nil:
		b.finish(ctx, p, approvals.StatusInvalidated, label(p)+" can no longer be applied: "+escape(err.Error()))
		return err
	case rev.SHA != p.SHA:
		b.finish(ctx, p, approvals.StatusInvalidated, fmt.Sprintf("%s moved to %s after it was planned; nothing was applied. Plan it again.", label(p), short(rev.SHA)))
		return nil
	}
	if err := b.promoted(ctx, proj, env, p.SHA); err != nil {
		if errors.Is(err, approvals.ErrNotPromoted) {
			b.finish(ctx, p, approvals.StatusInvalidated, "promotion check failed at apply time: "+escape(err.Error()))
		} else {
			b.abort(ctx, p, grant, "promotion record unavailable")
		}
		return err
	}

	target, err := b.o.Target(proj.Name, env.Name)
	if err != nil {
		b.abort(ctx, p, grant, "configuration changed")
		return err
	}
	b.post(ctx, p, fmt.Sprintf(":rocket: Applying plan `%s` (approved by %s) …", p.ID, mentions(grant.Approvers())))
	log.Info("applying", "approvers", grant.Approvers())
	prog := b.progress(ctx, p)
	res, err := b.o.Runner.Apply(ctx, runner.ApplyJob{Grant: grant, Rev: rev, Target: target, Progress: prog.add})
	prog.close()
	if errors.Is(err, runner.ErrDetached) {
		log.Warn("stopped waiting for the apply; another replica completes it", "err", err)
		return nil
	}
	return b.applied(ctx, p, grant, res, err)
}

// applied records the end of an apply — by the replica that waited for it,
// or by a sweeper that found its result — and says how it went.
func (b *Bot) applied(ctx context.Context, p approvals.Plan, grant approvals.Grant, res runner.ApplyResult, err error) error {
	log := b.log.With("env", p.Project+"/"+p.Env, "plan_id", p.ID, "fence", p.Fence)
	if res.RevokeErr != nil {
		b.post(ctx, p, fmt.Sprintf(":warning: Vault did not revoke the apply credential (accessor `%s`); it dies by its TTL at %s.",
			res.Accessor, res.Expires.UTC().Format("15:04:05 MST")))
	}
	switch {
	case err == nil:
		log.Info("applied", "summary", res.Summary, "accessor", res.Accessor, "duration", res.Duration)
		p = b.finishApply(ctx, p, grant, nil, fmt.Sprintf("%s in %s", res.Summary, res.Duration.Round(100*time.Millisecond)))
		done := fmt.Sprintf(":white_check_mark: Apply complete: %s.", res.Summary)
		if res.RevokeErr == nil {
			done += " The apply credential is revoked."
		}
		b.post(ctx, p, done)
	case errors.Is(err, runner.ErrCredentials):
		log.Warn("apply not started: credentials unavailable", "err", err)
		b.abort(ctx, p, grant, "")
		b.post(ctx, p, ":warning: Vault is unavailable: nothing was applied. The plan stays pending with its approvals.")
		return err
	case errors.Is(err, runner.ErrAudit):
		log.Error("apply not started: its audit record could not be written", "err", err)
		b.abort(ctx, p, grant, "")
		b.post(ctx, p, ":warning: The audit record could not be written, so nothing was applied. The plan stays pending with its approvals.")
		return err
	case errors.Is(err, runner.ErrStalePlan):
		b.finish(ctx, p, approvals.StatusInvalidated, b.describe(err))
		return nil
	case errors.Is(err, runner.ErrInterrupted):
		log.Error("apply interrupted", "err", err)
		b.finish(ctx, p, approvals.StatusInterrupted, "apply interrupted: "+escape(runner.Redact(err.Error())))
		return err
	case errors.Is(err, runner.ErrLockLost):
		b.finish(ctx, p, approvals.StatusInvalidated, "the environment lock was lost before the apply; nothing was applied")
		return err
	default:
		log.Error("apply failed", "err", err)
		p = b.finishApply(ctx, p, grant, err, "terraform apply failed")
		b.post(ctx, p, b.describe(err))
	}
	return nil
}

// finishApply records the end of an apply, frees the environment and
// updates the message.
func (b *Bot) finishApply(ctx context.Context, p approvals.Plan, g approvals.Grant, applyErr error, reason string) approvals.Plan {
	p, err := b.mutate(ctx, p.ID, func(cur approvals.Plan) (approvals.Plan, error) {
		return approvals.Finish(cur, g, applyErr, reason, b.o.Now())
	})
	if err != nil {
		// Ended meanwhile (an admin's unlock): that path updated the message.
		b.log.Error("record apply result", "plan_id", p.ID, "err", err)
		return p
	}
	if p.Status == approvals.StatusApplied {
		if err := b.o.Promos.RecordApplied(context.WithoutCancel(ctx), p.Project, p.Env, p.SHA, p.UpdatedAt); err != nil {
			b.log.Error("record applied commit; environments that require this one will refuse it", "plan_id", p.ID, "err", err)
		}
	}
	b.ended(ctx, p, "")
	return p
}

// promoted checks an environment's promotion rule for sha.
func (b *Bot) promoted(ctx context.Context, proj *config.Project, env *config.Environment, sha string) error {
	if env.Requires == "" {
		return nil
	}
	at, ok, err := b.o.Promos.AppliedAt(ctx, proj.Name, env.Requires, sha)
	if err != nil {
		return err
	}
	return approvals.Promoted(env.Requires, sha, env.Soak.D(), at, ok, b.o.Now())
}

// runnerRef converts a parsed ref for the runner.
func runnerRef(r commands.Ref) runner.Ref { return runner.Ref{PR: r.PR, SHA: r.SHA, Tag: r.Tag} }

// label names what a plan planned: "PR #42", "tag v1.2", "commit 1a2b3c4".
func label(p approvals.Plan) string {
	if ref, err := commands.ParseRef(p.Ref); err == nil {
		return ref.Label()
	}
	return fmt.Sprintf("PR #%d", p.PR)
}

// finish ends an open plan with a reason. Of several processes racing to
// end it, only the one whose compare-and-swap wins frees the environment
// and speaks; finish reports whether that was this one.
func (b *Bot) finish(ctx context.Context, p approvals.Plan, to approvals.Status, reason string) bool {
	p, err := b.mutate(ctx, p.ID, func(cur approvals.Plan) (approvals.Plan, error) {
		return approvals.End(cur, to, reason, b.o.Now())
	})
	if err != nil {
		var se *approvals.StateError
		if errors.As(err, &se) {
			// Ended elsewhere (a worker, another replica): show it as it is.
			b.refresh(ctx, p)
		} else {
			b.log.Error("end plan", "plan_id", p.ID, "status", string(to), "err", err)
		}
		return false
	}
	b.log.Info("plan ended", "plan_id", p.ID, "status", string(to), "reason", reason)
	typ := audit.Invalidation
	if to == approvals.StatusPlanFailed {
		typ = audit.PlanFailed
	}
	_ = b.record(ctx, typ, "", &p, map[string]string{"status": string(to), "reason": reason})
	b.ended(ctx, p, ":no_entry: "+reason)
	return true
}

// ended does what follows a plan's end: free its lock, drop its saved
// plan, re-render its message and, if there is one, post why in the thread.
func (b *Bot) ended(ctx context.Context, p approvals.Plan, note string) {
	b.release(leaseOf(p))
	_ = b.o.Runner.Discard(context.WithoutCancel(ctx), p.ID)
	b.refresh(ctx, p)
	if note != "" {
		b.post(ctx, p, note)
	}
}

// abort returns an applying plan to pending: nothing was changed.
func (b *Bot) abort(ctx context.Context, p approvals.Plan, g approvals.Grant, reason string) {
	p, err := b.mutate(ctx, p.ID, func(cur approvals.Plan) (approvals.Plan, error) {
		return approvals.Abort(cur, g, reason, b.o.Now())
	})
	if err != nil {
		b.log.Error("return plan to pending", "plan_id", p.ID, "err", err)
	}
	b.refresh(ctx, p)
}

// expire voids a plan that outlived its TTL.
func (b *Bot) expire(ctx context.Context, p approvals.Plan) {
	if !approvals.Expired(p, b.o.Now()) {
		return
	}
	b.finish(ctx, p, approvals.StatusInvalidated, fmt.Sprintf("expired at %s without enough approvals", p.ExpiresAt.UTC().Format("15:04 MST")))
}

// mutate updates a plan with a compare-and-swap on a context that survives
// the caller's, so state is never left half-recorded.
func (b *Bot) mutate(ctx context.Context, id string, fn func(approvals.Plan) (approvals.Plan, error)) (approvals.Plan, error) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	p, err := approvals.Update(ctx, b.o.Store, id, fn)
	if err == nil {
		b.dirty(ctx, id)
	}
	return p, err
}

func (b *Bot) release(l runner.Lease) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := b.o.Locks.Release(ctx, l); err != nil {
		b.log.Error("release lock; it frees when its lease ends", "lock", l.Key, "fence", l.Fence, "err", err)
	}
}

func leaseOf(p approvals.Plan) runner.Lease {
	return runner.Lease{Key: runner.LockKey(p.Project, p.Env), Owner: p.LockOwner, Fence: p.Fence}
}

// refresh re-renders a plan's channel message.
func (b *Bot) refresh(ctx context.Context, p approvals.Plan) {
	text, blocks := b.planMessage(b.o.Notary.Signed(p))
	b.edit(ctx, p.Channel, p.MessageTS, text, blocks, "plan_id", p.ID)
}

// post writes in the plan's thread.
func (b *Bot) post(ctx context.Context, p approvals.Plan, text string) {
	b.reply(ctx, p.Channel, p.MessageTS, text, "plan_id", p.ID)
}

// edit replaces the message at ts, if there is one; a failure is logged
// with attrs.
func (b *Bot) edit(ctx context.Context, channel, ts, text string, blocks []slack.Block, attrs ...any) {
	if ts == "" {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if _, _, _, err := b.api.UpdateMessageContext(ctx, channel, ts,
		slack.MsgOptionText(text, false), slack.MsgOptionBlocks(blocks...)); err != nil {
		b.log.Error("update message", append(attrs, "err", err)...)
	}
}

// reply writes in the thread of the message at ts, if there is one.
func (b *Bot) reply(ctx context.Context, channel, ts, text string, attrs ...any) {
	if ts == "" {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if _, _, err := b.api.PostMessageContext(ctx, channel, slack.MsgOptionText(clip(text, maxSection), false),
		slack.MsgOptionTS(ts)); err != nil {
		b.log.Error("post in thread", append(attrs, "err", err)...)
	}
}

// planFailure is the short reason shown on the message of a failed plan;
// the details go to the requester.
func planFailure(err error) string {
	var te *runner.TerraformError
	switch {
	case errors.As(err, &te):
		return "terraform " + te.Step + " failed; the details were sent to the requester"
	case errors.Is(err, runner.ErrCredentials):
		return "plan credentials unavailable"
	case errors.Is(err, runner.ErrSource):
		return "could not check out the commit"
	case errors.Is(err, runner.ErrNoWorkDir):
		return "the terraform directory is not in this revision"
	case errors.Is(err, runner.ErrForkPR):
		return "pull requests from forks are not planned here"
	case errors.Is(err, runner.ErrProvider):
		return "a provider is not allowed; the details were sent to the requester"
	case errors.Is(err, runner.ErrSandbox):
		return "the sandbox could not be set up, so nothing ran"
	case errors.Is(err, runner.ErrInterrupted):
		return "plan interrupted"
	}
	return "plan failed"
}

func mentions(users []string) string {
	var m []string
	for _, u := range users {
		m = append(m, "<@"+u+">")
	}
	return strings.Join(m, ", ")
}

var planIDEncoding = base32.NewEncoding("abcdefghijkmnpqrstuvwxyz23456789").WithPadding(base32.NoPadding)

func newPlanID() string {
	var r [5]byte
	_, _ = rand.Read(r[:])
	return "p-" + planIDEncoding.EncodeToString(r[:])
}

// applyProgress batches apply progress lines into thread posts.
type applyProgress struct {
	mu    sync.Mutex
	lines []string
	stop  chan struct{}
	done  chan struct{}
}

func (b *Bot) progress(ctx context.Context, p approvals.Plan) *applyProgress {
	ap := &applyProgress{stop: make(chan struct{}), done: make(chan struct{})}
	flush := func() {
		ap.mu.Lock()
		lines := ap.lines
		ap.lines = nil
		ap.mu.Unlock()
		if len(lines) > 0 {
			b.post(ctx, p, "```"+clip(strings.Join(lines, "\n"), maxSection-6)+"```")
		}
	}
	go func() {
		defer close(ap.done)
		t := time.NewTicker(b.progressIn)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				flush()
			case <-ap.stop:
				flush()
				return
			}
		}
	}()
	return ap
}

func (ap *applyProgress) add(line string) {
	ap.mu.Lock()
	defer ap.mu.Unlock()
	ap.lines = append(ap.lines, line)
}

func (ap *applyProgress) close() {
	close(ap.stop)
	<-ap.done
}
