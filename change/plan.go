package change

import (
	"context"
	"crypto/rand"
	"encoding/base32"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/twokey/twokey/approvals"
	"github.com/twokey/twokey/audit"
	"github.com/twokey/twokey/commands"
	"github.com/twokey/twokey/runner"
)

// clickKey identifies one person's decision on one plan or grant, once:
// a double-click or a redelivered click finds it taken. A plan whose apply
// could not start counts a new attempt, so approving again then is a new
// decision: the retry. Grants have one attempt.
func clickKey(id string, d decision, user string, attempt int) string {
	return fmt.Sprintf("click:%s:%s:%s:%d", id, d, user, attempt)
}

// decision names what a click decides, in its de-duplication key.
type decision string

const (
	decideApprove      decision = "approve"
	decideReject       decision = "reject"
	decideOverride     decision = "override"
	decideGrantApprove decision = "bg-approve"
)

// changed tells GitHub feedback, if there is any, that a plan changed.
func (s *Service) changed(ctx context.Context, id string) {
	if s.o.Changed != nil {
		s.o.Changed(ctx, id)
	}
}

// forgetOnError lets a click be pressed again when it did nothing — a
// refusal or a transient fault — so that it never swallows a later press
// that should count (the user was added to the group meanwhile, say).
func (s *Service) forgetOnError(ctx context.Context, key string, err *error) {
	if *err == nil {
		return
	}
	if ferr := s.o.Dedup.Forget(context.WithoutCancel(ctx), key); ferr != nil {
		s.log.Warn("forget click", "key", key, "err", ferr)
	}
}

// firstTime reports whether this is the first delivery of key, telling the
// user when the state store cannot say (nothing is done then).
func (s *Service) First(ctx context.Context, key, channel, user string) bool {
	first, err := s.o.Dedup.First(ctx, key, DedupTTL)
	if err != nil {
		s.log.Error("state store unavailable", "key", key, "err", err)
		s.fail(ctx, channel, user, fmt.Errorf("%w: %w", ErrStateStore, err))
		return false
	}
	if !first {
		s.log.Info("duplicate delivery ignored", "key", key, "user", user)
	}
	return first
}

// plan runs `/tf plan`: resolve the PR, take the environment lock, post the
// message, plan, and show the result with buttons.
func (s *Service) Plan(ctx context.Context, channel, user string, cmd commands.Plan) error {
	proj, env, err := s.cfg.Resolve(cmd.Project, cmd.Env)
	if err != nil {
		return err
	}
	if len(env.Channels) > 0 && !slices.Contains(env.Channels, channel) {
		return &ChannelError{Env: env.Name, Allowed: env.Channels}
	}
	if !env.Planners.Empty() {
		ok, err := s.includes(ctx, user, env.Planners)
		if !ok && err != nil {
			return fmt.Errorf("%w: %w", ErrMembership, err)
		}
		if !ok {
			return ErrNotPlanner
		}
	}
	rev, err := s.o.Runner.Resolve(ctx, proj.Repo, cmd.Ref)
	if err != nil {
		return err
	}
	if err := s.promoted(ctx, proj, env, rev.SHA); err != nil {
		return err
	}
	unmet, err := s.unmet(ctx, env, rev)
	if err != nil {
		return err
	}
	id, now := newPlanID(), s.o.Now()
	holder := runner.Holder{User: user, PR: rev.PR, Ref: cmd.Ref.Label(), PlanID: id, Since: now}
	lease, err := s.o.Locks.Acquire(ctx, runner.LockKey(proj.Name, env.Name), holder, env.LockTTL.D())
	var locked *runner.LockedError
	if errors.As(err, &locked) && locked.Holder.Ref == holder.Ref {
		lease, err = s.replan(ctx, locked.Holder, holder, user, env.LockTTL.D())
	}
	if errors.As(err, &locked) && locked.Holder.Ref != holder.Ref {
		s.stats.LockBusy(proj.Name, env.Name)
	}
	if err != nil {
		return err
	}
	log := s.log.With("env", proj.Name+"/"+env.Name, "ref", cmd.Ref.String(), "plan_id", id, "user", user, "fence", lease.Fence)
	p, err := approvals.New(approvals.Request{
		ID: id, Project: proj.Name, Env: env.Name, PR: rev.PR, Ref: cmd.Ref, SHA: rev.SHA, Title: rev.Title, URL: rev.URL,
		Requester: user, Authors: rev.Authors, Channel: channel, Fence: lease.Fence, LockOwner: lease.Owner,
		Required: env.RequiredApprovals, Protected: *env.Protected, TTL: env.PlanTTL.D(),
		OverridesRequired: proj.PolicyFor(env).OverridesNeeded(),
	}, now)
	if err == nil {
		p.Unmet = unmetWords(unmet)
		p, err = s.o.Store.Create(ctx, p)
	}
	if err != nil {
		s.release(ctx, lease)
		return err
	}
	s.changed(ctx, p.ID)
	posted, err := s.n.ShowPlan(ctx, p)
	if err != nil {
		s.finish(ctx, p, approvals.StatusInvalidated, "could not post the plan")
		return fmt.Errorf("post plan message: %w", err)
	}
	if p, err = s.mutate(ctx, p.ID, func(p approvals.Plan) (approvals.Plan, error) {
		p.MessageTS, p.Permalink = posted.TS, posted.Permalink
		return p, nil
	}); err != nil {
		s.release(ctx, lease)
		return err
	}
	log.Info("planning", "sha", rev.SHA)
	_ = s.record(ctx, audit.PlanStarted, user, &p, map[string]string{"title": rev.Title})

	target, err := s.o.Target(proj.Name, env.Name)
	if err != nil {
		s.finish(ctx, p, approvals.StatusPlanFailed, "the environment's configuration is unreadable")
		return err
	}
	started := time.Now()
	// The changes terraform reported are shown, with the buttons, before
	// the saved plan is read back; the plan is shown as it ends only after
	// that.
	preview := func(sum approvals.Summary) { s.preview(ctx, p.ID, sum) }
	res, err := s.o.Runner.Plan(ctx, runner.PlanJob{PlanID: p.ID, Rev: rev, Lease: lease, Target: target, Preview: preview})
	if errors.Is(err, runner.ErrDetached) {
		log.Warn("stopped waiting for the plan; another replica completes it", "err", err)
		if cur, gerr := s.o.Store.Get(ctx, p.ID); gerr == nil && cur.Status.Terminal() {
			s.refresh(ctx, cur) // ended (rejected) before the preview was shown
		}
		return nil
	}
	err = s.planned(ctx, p, res, err, time.Since(started))
	var se *approvals.StateError
	if errors.As(err, &se) && se.Status.Terminal() {
		// Ended while planning (rejected): the preview may have been
		// shown after that.
		if cur, gerr := s.o.Store.Get(ctx, p.ID); gerr == nil {
			s.refresh(ctx, cur)
		}
	}
	return err
}

// preview records what terraform said a plan does and shows it, with its
// buttons (see decide for a click on it), unless the plan is no longer
// being planned. The runner reads the plan back once it returns: the
// read-back's processes, starting, would slow both several-fold.
func (s *Service) preview(ctx context.Context, id string, sum approvals.Summary) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	p, err := approvals.Update(ctx, s.o.Store, id, func(p approvals.Plan) (approvals.Plan, error) {
		if p.Status != approvals.StatusPlanning {
			return p, approvals.ErrUnchanged
		}
		p.Preview = &sum
		return p, nil
	})
	if err == nil && p.Status == approvals.StatusPlanning {
		s.refresh(ctx, p)
	}
}

// planned records a finished plan — by the replica that waited for it, or
// by a sweeper that found its result — and shows it with buttons.
// took is how long terraform ran, 0 when unknown.
func (s *Service) planned(ctx context.Context, p approvals.Plan, res runner.PlanResult, planErr error, took time.Duration) error {
	log := s.log.With("plan_id", p.ID, "env", p.Project+"/"+p.Env)
	proj, env, err := s.cfg.Resolve(p.Project, p.Env)
	if err != nil {
		return err
	}
	if planErr == nil {
		planErr = undefinedGroups(proj.PolicyFor(env), res.Policy)
	}
	if planErr != nil {
		log.Warn("plan failed", "err", planErr)
		if s.finish(ctx, p, approvals.StatusPlanFailed, planFailure(planErr)) {
			s.stats.Planned(p.Project, p.Env, string(approvals.StatusPlanFailed), took)
			s.fail(ctx, p.Channel, p.Requester, planErr, "plan_id", p.ID)
		}
		return nil
	}
	p, err = s.mutate(ctx, p.ID, func(p approvals.Plan) (approvals.Plan, error) {
		p, err := approvals.Planned(p, res.Digest, res.Summary, res.Policy, env.PlanTTL.D(), s.o.Now())
		if err != nil {
			return p, err
		}
		return s.o.Notary.Seal(p)
	})
	if err != nil {
		var se *approvals.StateError
		if errors.As(err, &se) && se.Status.Terminal() {
			// Rejected while planning: the reject already released the lock.
			_ = s.o.Runner.Discard(context.WithoutCancel(ctx), p.ID)
			return err
		}
		// Recorded already — by the replica that waited, or by a sweeper
		// that found the result first — or the store could not say: the
		// saved plan may be the one that will be applied, so it stays (a
		// plan that never gets anywhere has it dropped when it ends).
		if se != nil {
			return nil
		}
		return err
	}
	lease := leaseOf(p)
	s.stats.Planned(p.Project, p.Env, string(p.Status), took)
	_ = s.record(ctx, audit.PlanFinished, "", &p, map[string]string{"add": fmt.Sprint(res.Summary.Add),
		"change": fmt.Sprint(res.Summary.Change), "destroy": fmt.Sprint(res.Summary.Destroy), "result": string(p.Status),
		"counts": res.Summary.Counts(), "policy": string(p.Policy.Status()), "required": fmt.Sprint(p.Required)})
	if p.Status == approvals.StatusNoChanges {
		s.release(ctx, lease)
		_ = s.o.Runner.Discard(context.WithoutCancel(ctx), p.ID)
		s.refresh(ctx, p)
		s.uploadPlan(ctx, p, res.Text)
		return nil
	}
	// The pending plan holds the environment until it is applied, rejected
	// or expires.
	if err := s.o.Locks.Refresh(ctx, lease, p.ExpiresAt.Sub(s.o.Now())); err != nil {
		s.finish(ctx, p, approvals.StatusInvalidated, "the environment lock was lost while planning")
		return err
	}
	log.Info("plan ready", "digest", p.Digest, "add", res.Summary.Add, "change", res.Summary.Change, "destroy", res.Summary.Destroy)
	// The message with its buttons first; the whole plan and the policy
	// report follow in its thread.
	s.refresh(ctx, p)
	s.uploadPlan(ctx, p, res.Text)
	if report := PolicyReport(p); report != "" {
		s.post(ctx, p, report)
	}
	return nil
}

// replan replaces the pending plan of the same pull request: its approvals
// are void, and the lock passes to the new plan with a new fence in one
// step, so no other plan can slip in between.
func (s *Service) replan(ctx context.Context, held, holder runner.Holder, user string, ttl time.Duration) (runner.Lease, error) {
	old, err := s.o.Store.Get(ctx, held.PlanID)
	if err != nil {
		return runner.Lease{}, err
	}
	reason := fmt.Sprintf("replaced by a new plan of %s requested by <@%s>; its approvals no longer count", Label(old), user)
	old, err = s.mutate(ctx, old.ID, func(cur approvals.Plan) (approvals.Plan, error) {
		if cur.Status != approvals.StatusPending {
			// Planning or applying: the environment is busy, not replaceable.
			return cur, &runner.LockedError{Key: runner.LockKey(cur.Project, cur.Env), Holder: held}
		}
		return approvals.End(cur, approvals.StatusInvalidated, reason, s.o.Now())
	})
	if err != nil {
		return runner.Lease{}, err
	}
	_ = s.record(ctx, audit.Invalidation, user, &old, map[string]string{"status": string(old.Status), "reason": reason})
	_ = s.o.Runner.Discard(context.WithoutCancel(ctx), old.ID)
	s.refresh(ctx, old)
	s.post(ctx, old, ":recycle: "+reason+".")
	lease, err := s.o.Locks.Takeover(ctx, leaseOf(old), holder, ttl)
	if errors.Is(err, runner.ErrLockLost) {
		// It expired meanwhile: take it afresh.
		lease, err = s.o.Locks.Acquire(ctx, leaseOf(old).Key, holder, ttl)
	}
	s.log.Info("replanning", "replaced", old.ID, "ref", old.Ref, "user", user)
	return lease, err
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
	case errors.Is(err, ErrPolicyGroup):
		return "policy requires an approval from a group twokey does not know; the details were sent to the requester"
	}
	return "plan failed"
}

var planIDEncoding = base32.NewEncoding("abcdefghijkmnpqrstuvwxyz23456789").WithPadding(base32.NoPadding)

func newPlanID() string {
	var r [5]byte
	_, _ = rand.Read(r[:])
	return "p-" + planIDEncoding.EncodeToString(r[:])
}

// applyProgress shows apply progress in the plan's thread: one message,
// edited as lines arrive (at most every ProgressEvery), where the front end
// can edit (Options.Progress); otherwise a post per batch.
type applyProgress struct {
	mu    sync.Mutex
	lines []string
	fresh int // lines not shown yet
	stop  chan struct{}
	done  chan struct{}
}

// Progresser keeps one message up to date: Progress
// posts text in t when ts is empty and replaces the message at ts
// otherwise, and returns the message's ts.
type Progresser interface {
	Progress(ctx context.Context, t Thread, ts, text string) (string, error)
}

// progressText is the last lines that fit in one message.
func progressText(lines []string) string {
	n, size := len(lines), 0
	for n > 0 && size+len(lines[n-1])+1 <= MaxSection-6 {
		size += len(lines[n-1]) + 1
		n--
	}
	if n == len(lines) && n > 0 {
		n-- // one line longer than a message: clipped
	}
	return "```" + Clip(strings.Join(lines[n:], "\n"), MaxSection-6) + "```"
}

func (s *Service) progress(ctx context.Context, p approvals.Plan) *applyProgress {
	ap := &applyProgress{stop: make(chan struct{}), done: make(chan struct{})}
	edit, editable := s.o.Progress, s.o.Progress != nil
	var ts string // the progress message, once posted
	flush := func() {
		ap.mu.Lock()
		fresh, all := ap.lines[len(ap.lines)-ap.fresh:], slices.Clone(ap.lines)
		ap.fresh = 0
		ap.mu.Unlock()
		switch {
		case len(fresh) == 0 || p.MessageTS == "":
		case editable:
			id, err := edit.Progress(ctx, threadOf(p), ts, progressText(all))
			if err != nil {
				s.log.Warn("apply progress", "plan_id", p.ID, "err", err)
			} else {
				ts = id
			}
		default:
			s.post(ctx, p, "```"+Clip(strings.Join(fresh, "\n"), MaxSection-6)+"```")
		}
	}
	go func() {
		defer close(ap.done)
		t := time.NewTicker(s.o.ProgressEvery)
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
	ap.fresh++
}

func (ap *applyProgress) close() {
	close(ap.stop)
	<-ap.done
}

// uploadPlan puts the full plan text in the plan's thread as a file.
func (s *Service) uploadPlan(ctx context.Context, p approvals.Plan, text string) {
	if p.MessageTS == "" {
		return
	}
	s.attach(ctx, threadOf(p), "plan-"+p.ID+".txt",
		fmt.Sprintf("terraform plan of %s for %s/%s", Label(p), p.Project, p.Env), text)
}
