package change

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/twokey/twokey/approvals"
	"github.com/twokey/twokey/audit"
	"github.com/twokey/twokey/config"
	"github.com/twokey/twokey/runner"
)

// Approve counts an Approve click and starts the apply on quorum. This
// and Override are where a person's decision on a plan is decided.
func (s *Service) Approve(ctx context.Context, channel, user, planID string) error {
	return s.decide(ctx, channel, user, planID, decideApprove, "")
}

// ApprovePreview counts an Approve clicked on a plan's preview, whose
// Summary.Tag was seen: it waits for the saved plan and counts only if that
// says what was seen (awaitChecked).
func (s *Service) ApprovePreview(ctx context.Context, channel, user, planID, seen string) error {
	if seen == "" {
		return &approvals.StateError{Status: approvals.StatusPlanning, Want: approvals.ErrNotPending}
	}
	return s.decide(ctx, channel, user, planID, decideApprove, seen)
}

// Override records a policy owner's override of a policy denial, after
// which the plan may take approvals; on a plan that already has them it
// starts the apply, as the last approval would.
func (s *Service) Override(ctx context.Context, channel, user, planID string) error {
	return s.decide(ctx, channel, user, planID, decideOverride, "")
}

// decide counts one person's approval or override of a plan and starts
// the apply when that completes the quorum (approvals.HasQuorum). seen is
// the tag of the preview an approval was clicked on, if it was.
func (s *Service) decide(ctx context.Context, channel, user, planID string, d decision, seen string) (err error) {
	p, err := s.o.Store.Get(ctx, planID)
	if err != nil {
		return err
	}
	if p.Status == approvals.StatusPlanning && seen == "" {
		return &approvals.StateError{Status: p.Status, Want: approvals.ErrNotPending}
	}
	key := clickKey(p.ID, d, user, p.Attempts)
	if !s.First(ctx, key, channel, user) {
		return nil // a double-click, or Slack delivering the same click twice
	}
	defer s.forgetOnError(ctx, key, &err)
	proj, env, err := s.cfg.Resolve(p.Project, p.Env)
	if err != nil {
		return err
	}
	who := env.Approvers
	if d == decideOverride {
		who = config.Who{}
		if pol := proj.PolicyFor(env); pol != nil {
			who = pol.Owners
		}
	}
	authorized, derr := s.includes(ctx, user, who)
	if !authorized && derr != nil && user != p.Requester {
		return fmt.Errorf("%w: %w", ErrMembership, derr)
	}
	if seen != "" {
		// Only someone who may approve waits for the saved plan; the
		// requester waits too, and is then told what any click of theirs
		// is told.
		if !authorized && user != p.Requester {
			return approvals.ErrNotAuthorized
		}
		if p, err = s.awaitChecked(ctx, p, seen); err != nil {
			return err
		}
	}
	rule, ruleErr := s.approverRule(ctx, env, user)
	if ruleErr != nil {
		if authorized && user != p.Requester {
			return ruleErr
		}
		rule = func(approvals.Plan) error { return ruleErr }
	}
	if d == decideApprove && authorized && user != p.Requester && len(env.Requirements) > 0 {
		// GitHub's side, as it is now: approving waits until it holds.
		unmet, err := s.unmet(ctx, env, planRevision(proj, p))
		if err != nil {
			return err
		}
		p = s.noteUnmet(ctx, p, unmet)
		if len(unmet) > 0 {
			return &RequirementsError{Unmet: unmet}
		}
	}
	groups := s.groupsOf(ctx, user, proj, env, p)
	var res approvals.Result
	p, err = s.mutate(ctx, planID, func(cur approvals.Plan) (approvals.Plan, error) {
		var next approvals.Plan
		var err error
		if seen != "" {
			// Decided on the sealed record itself, not on what an earlier
			// read of the store said.
			if err := s.o.Notary.CheckSeal(cur); err != nil {
				return cur, err
			}
			if err := previewBorneOut(cur, seen); err != nil {
				return cur, err
			}
		}
		if d == decideOverride {
			next, res, err = s.o.Notary.Override(cur, user, authorized, s.o.Now())
		} else {
			next, res, err = s.o.Notary.Approve(cur, user, authorized, s.o.Now(), groups...)
		}
		if err == nil && res.Counted {
			// cur's seal, which covers its authors, checked out.
			if err := rule(cur); err != nil {
				res = approvals.Result{}
				return cur, err
			}
		}
		if err == nil && res.Duplicate && res.Forged == 0 {
			return cur, approvals.ErrUnchanged
		}
		return next, err
	})
	if res.Forged > 0 || errors.Is(err, approvals.ErrForged) {
		s.forgery(ctx, p, fmt.Sprintf("%d approval(s) without a trusted signature found and not counted", res.Forged), err)
	}
	if errors.Is(err, approvals.ErrExpired) {
		s.expire(ctx, p)
		return err
	}
	if err != nil {
		return err
	}
	s.log.Info(string(d), "plan_id", p.ID, "user", user, "counted", res.Counted, "quorum", res.Quorum)
	if res.Counted {
		if d == decideOverride {
			_ = s.record(ctx, audit.PolicyOverride, user, &p, map[string]string{
				"overrides": fmt.Sprintf("%d of %d", len(approvals.Overriders(p)), p.OverridesRequired),
				"denied":    findingRules(p.Policy.Denied)})
			s.post(ctx, p, fmt.Sprintf(":unlock: <@%s> overrode the policy denial (%s) as a policy owner; this is recorded.",
				user, Escape(findingRules(p.Policy.Denied))))
		} else {
			s.stats.Approved(p.Project, p.Env)
			_ = s.record(ctx, audit.Approval, user, &p, map[string]string{
				"approvals": fmt.Sprintf("%d of %d", len(approvals.Approvers(p)), p.Required)})
		}
		s.refresh(ctx, p)
	}
	if res.Duplicate && !res.Quorum {
		s.tell(ctx, channel, user, "You already "+map[decision]string{decideApprove: "approved", decideOverride: "overrode"}[d]+
			" this plan; it still needs "+Needs(p)+".")
	}
	if res.Quorum {
		if ok, err := s.recheck(ctx, p); !ok || err != nil {
			return err
		}
		return s.apply(ctx, p.ID, channel, user)
	}
	return nil
}

// groupsOf lists the groups the plan's policy requires that user is in. A
// membership that cannot be read counts as not in it: the approval then
// does not satisfy that group.
func (s *Service) groupsOf(ctx context.Context, user string, proj *config.Project, env *config.Environment, p approvals.Plan) []string {
	pol := proj.PolicyFor(env)
	var in []string
	for _, g := range p.Policy.GroupNames() {
		who, ok := pol.GroupNamed(g)
		if !ok {
			continue
		}
		member, err := s.includes(ctx, user, who)
		if err != nil {
			s.log.Warn("group membership unreadable; the approval does not count for it", "group", g, "user", user, "err", err)
		}
		if member {
			in = append(in, g)
		}
	}
	return in
}

// reject ends a pending plan and frees the environment.
func (s *Service) Reject(ctx context.Context, channel, user, planID string) (err error) {
	p, err := s.o.Store.Get(ctx, planID)
	if err != nil {
		return err
	}
	_, env, err := s.cfg.Resolve(p.Project, p.Env)
	if err != nil {
		return err
	}
	key := clickKey(p.ID, decideReject, user, p.Attempts)
	if !s.First(ctx, key, channel, user) {
		return nil
	}
	defer s.forgetOnError(ctx, key, &err)
	authorized := false
	if user != p.Requester {
		ok, derr := s.includes(ctx, user, env.Approvers)
		if !ok && derr != nil {
			return fmt.Errorf("%w: %w", ErrMembership, derr)
		}
		authorized = ok
	}
	p, err = s.mutate(ctx, planID, func(cur approvals.Plan) (approvals.Plan, error) {
		return approvals.Reject(cur, user, authorized, "", s.o.Now())
	})
	if err != nil {
		return err
	}
	s.log.Info("rejected", "plan_id", p.ID, "user", user)
	_ = s.record(ctx, audit.Rejection, user, &p, nil)
	s.ended(ctx, p, "")
	return nil
}

// apply moves a plan with quorum to applying — a compare-and-swap that only
// one process wins — and runs it.
func (s *Service) apply(ctx context.Context, planID, channel, actor string) error {
	p, err := s.o.Store.Get(ctx, planID)
	if err != nil {
		return err
	}
	proj, env, err := s.cfg.Resolve(p.Project, p.Env)
	if err != nil {
		return err
	}
	// Everything that can stop the apply is checked before the permit is
	// signed, so that no permit exists for an apply that was never meant
	// to start (one a Redis writer could otherwise put back and replay).
	// The ref must still name the commit that was planned and approved,
	// and that commit must still have been through the environments
	// before.
	rev, err := s.o.Runner.Resolve(ctx, proj.Repo, p.Ref)
	switch {
	case errors.Is(err, runner.ErrSource):
		return err // GitHub unavailable: the plan stays pending; Approve again retries
	case err != nil:
		s.finish(ctx, p, approvals.StatusInvalidated, Label(p)+" can no longer be applied: "+Escape(err.Error()))
		return err
	case rev.SHA != p.SHA:
		s.finish(ctx, p, approvals.StatusInvalidated, fmt.Sprintf("%s moved to %s after it was planned; nothing was applied. Plan it again.", Label(p), Short(rev.SHA)))
		return nil
	}
	if err := s.promoted(ctx, proj, env, p.SHA); err != nil {
		if errors.Is(err, approvals.ErrNotPromoted) {
			s.finish(ctx, p, approvals.StatusInvalidated, "promotion check failed at apply time: "+Escape(err.Error()))
		}
		return err
	}
	// GitHub's requirements must still hold: a review dismissed or the base
	// moved since the approvals stops the apply.
	switch unmet, err := s.unmet(ctx, env, rev); {
	case err != nil:
		return err
	case len(unmet) > 0:
		p = s.noteUnmet(ctx, p, unmet)
		s.post(ctx, p, ":no_entry: Nothing was applied: "+Escape((&RequirementsError{Unmet: unmet}).Error())+
			". The plan stays pending with its approvals; once GitHub's side holds again, click *Approve* to retry.")
		return &RequirementsError{Unmet: unmet}
	}
	target, err := s.o.Target(proj.Name, env.Name)
	if err != nil {
		return err
	}

	var permit approvals.Permit
	p, err = s.mutate(ctx, planID, func(cur approvals.Plan) (approvals.Plan, error) {
		next, g, err := s.o.Notary.BeginApply(cur, s.o.Now())
		permit = g
		return next, err
	})
	if errors.Is(err, approvals.ErrForged) {
		s.forgery(ctx, p, "apply refused", err)
	}
	var se *approvals.StateError
	if errors.As(err, &se) && se.Status == approvals.StatusApplying {
		return nil // another click or process is applying it
	}
	if errors.Is(err, approvals.ErrExpired) {
		s.expire(ctx, p)
		return err
	}
	if err != nil {
		return err
	}
	log := s.log.With("env", p.Project+"/"+p.Env, "pr", p.PR, "plan_id", p.ID, "fence", p.Fence)
	s.refresh(ctx, p)
	s.post(ctx, p, fmt.Sprintf(":rocket: Applying plan `%s` (approved by %s) …", p.ID, Mentions(permit.Approvers())))
	log.Info("applying", "approvers", permit.Approvers())
	prog := s.progress(ctx, p)
	res, err := s.o.Runner.Apply(ctx, runner.ApplyJob{Permit: permit, Rev: rev, Target: target, Progress: prog.add})
	prog.close()
	if errors.Is(err, runner.ErrDetached) {
		log.Warn("stopped waiting for the apply; another replica completes it", "err", err)
		return nil
	}
	return s.applied(ctx, p, permit, res, err)
}

// applied records the end of an apply — by the replica that waited for it,
// or by a sweeper that found its result — and says how it went.
func (s *Service) applied(ctx context.Context, p approvals.Plan, permit approvals.Permit, res runner.ApplyResult, err error) error {
	log := s.log.With("env", p.Project+"/"+p.Env, "plan_id", p.ID, "fence", p.Fence)
	// ran says what only the one who records the apply's end says.
	ran := func() {
		if res.RevokeErr != nil {
			s.post(ctx, p, fmt.Sprintf(":warning: Vault did not revoke the apply credential (accessor `%s`); it dies by its TTL at %s.",
				res.Accessor, res.Expires.UTC().Format("15:04:05 MST")))
		}
	}
	if err != nil && applyResult(err) != "failed" {
		// An apply that did not run to a result: counted here; one that did
		// is counted by whoever records its end (finishApply).
		s.stats.Applied(p.Project, p.Env, applyResult(err), res.Duration)
	}
	switch {
	case err == nil:
		log.Info("applied", "summary", res.Summary, "accessor", res.Accessor, "duration", res.Duration)
		var won bool
		if p, won = s.finishApply(ctx, p, permit, nil, fmt.Sprintf("%s in %s", res.Summary, res.Duration.Round(100*time.Millisecond)), res.Duration); !won {
			return nil
		}
		ran()
		done := fmt.Sprintf(":white_check_mark: Apply complete: %s.", res.Summary)
		if res.RevokeErr == nil {
			done += " The apply credential is revoked."
		}
		s.post(ctx, p, done)
		s.verifyAfter(ctx, p)
	case errors.Is(err, runner.ErrCredentials):
		log.Warn("apply not started: credentials unavailable", "err", err)
		if s.abort(ctx, p, permit, "") {
			s.post(ctx, p, ":warning: Vault is unavailable: nothing was applied. The plan stays pending with its approvals.")
		}
		return err
	case errors.Is(err, runner.ErrAudit):
		log.Error("apply not started: its audit record could not be written", "err", err)
		if s.abort(ctx, p, permit, "") {
			s.post(ctx, p, ":warning: The audit record could not be written, so nothing was applied. The plan stays pending with its approvals.")
		}
		return err
	case errors.Is(err, runner.ErrStalePlan):
		s.finish(ctx, p, approvals.StatusInvalidated, s.n.Describe(err))
		return nil
	case errors.Is(err, runner.ErrInterrupted):
		log.Error("apply interrupted", "err", err)
		s.finish(ctx, p, approvals.StatusInterrupted, "apply interrupted: "+Escape(runner.Redact(err.Error())))
		return err
	case errors.Is(err, runner.ErrLockLost):
		s.finish(ctx, p, approvals.StatusInvalidated, "the environment lock was lost before the apply; nothing was applied")
		return err
	default:
		log.Error("apply failed", "err", err)
		var won bool
		if p, won = s.finishApply(ctx, p, permit, err, "terraform apply failed", res.Duration); won {
			ran()
			s.post(ctx, p, s.n.Describe(err))
		}
	}
	return nil
}

// finishApply records the end of an apply, frees the environment and
// updates the message. It reports whether this call recorded it: of the
// replica that waited and sweepers that found the result, one does.
func (s *Service) finishApply(ctx context.Context, p approvals.Plan, g approvals.Permit, applyErr error, reason string, took time.Duration) (approvals.Plan, bool) {
	p, err := s.mutate(ctx, p.ID, func(cur approvals.Plan) (approvals.Plan, error) {
		return approvals.Finish(cur, g, applyErr, reason, s.o.Now())
	})
	var se *approvals.StateError
	if errors.As(err, &se) {
		return p, false // recorded by another, or ended meanwhile (an admin's unlock): that path spoke
	}
	if err != nil {
		s.log.Error("record apply result", "plan_id", p.ID, "err", err)
		return p, false
	}
	s.stats.Applied(p.Project, p.Env, applyResult(applyErr), took) // before the message says so
	if p.Status == approvals.StatusApplied {
		if err := s.o.Promos.RecordApplied(context.WithoutCancel(ctx), p.Project, p.Env, p.SHA, p.UpdatedAt); err != nil {
			s.log.Error("record applied commit; environments that require this one will refuse it", "plan_id", p.ID, "err", err)
		}
	}
	s.ended(ctx, p, "")
	return p, true
}

// promoted checks an environment's promotion rule for sha.
func (s *Service) promoted(ctx context.Context, proj *config.Project, env *config.Environment, sha string) error {
	if env.Requires == "" {
		return nil
	}
	at, ok, err := s.o.Promos.AppliedAt(ctx, proj.Name, env.Requires, sha)
	if err != nil {
		return err
	}
	return approvals.Promoted(env.Requires, sha, env.Soak.D(), at, ok, s.o.Now())
}

// previewWait bounds how long a click on a plan's preview waits for the
// saved plan.
const previewWait = time.Minute

// awaitChecked holds a click on a plan's preview (terraform's own account
// of the plan, shown while the saved plan is read back), whose tag seen the
// button carried, until the saved plan is in, and refuses it at once if the
// plan does not bear the preview out (previewBorneOut; decide checks that
// again on the sealed record it changes). One the saved plan never follows
// within previewWait is refused.
func (s *Service) awaitChecked(ctx context.Context, p approvals.Plan, seen string) (approvals.Plan, error) {
	ctx, cancel := context.WithTimeout(ctx, previewWait)
	defer cancel()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for p.Status == approvals.StatusPlanning {
		select {
		case <-ctx.Done():
			return p, &approvals.StateError{Status: p.Status, Want: approvals.ErrNotPending}
		case <-tick.C:
		}
		var err error
		if p, err = s.o.Store.Get(ctx, p.ID); err != nil {
			return p, err
		}
	}
	return p, previewBorneOut(p, seen)
}

// previewBorneOut: the plan waits for approvals, says exactly the changes
// of the preview tagged seen, and its checks found nothing the preview
// could not show — no policy finding, no raised quorum or required group,
// no risk but the destroys and replacements the preview listed.
func previewBorneOut(p approvals.Plan, seen string) error {
	if p.Status != approvals.StatusPending {
		return &approvals.StateError{Status: p.Status, Want: approvals.ErrNotPending}
	}
	a := p.Policy
	more := len(a.Denied) + len(a.Warnings) + len(a.Groups) + len(a.Reasons) + a.Required
	for _, r := range a.Risks {
		if r.Kind != approvals.RiskDestroy && r.Kind != approvals.RiskReplace {
			more++
		}
	}
	if seen != p.Summary.Tag() || more > 0 {
		return ErrLookAgain
	}
	return nil
}
