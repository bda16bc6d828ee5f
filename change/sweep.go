package change

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/twokey/twokey/approvals"
	"github.com/twokey/twokey/runner"
)

// sweeper checks the open plans every SweepInterval until ctx ends. Every
// bot process runs one; the compare-and-swap in finish makes exactly one of
// them act on each plan.
func (s *Service) sweeper(ctx context.Context) {
	t := time.NewTicker(s.o.SweepInterval)
	defer t.Stop()
	var trimmed time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			s.sweep(ctx)
			s.sweepGrants(ctx)
			s.sweepVerifications(ctx)
			if now := s.o.Now(); s.o.Trim != nil && now.Sub(trimmed) > trimEvery {
				trimmed = now
				if n, err := s.o.Trim(ctx); err != nil {
					s.log.Warn("audit retention", "err", err)
				} else if n > 0 {
					s.log.Info("audit retention: trimmed old events", "events", n)
				}
			}
		}
	}
}

// trimEvery is how often the audit retention runs.
const trimEvery = 10 * time.Minute

// sweep ends plans that can no longer go anywhere:
//   - pending or planning past their TTL: expired;
//   - planning or applying while their lock is gone or held by another fence:
//     the bot doing the work died. An apply is marked interrupted and never
//     retried; its Vault token dies by its TTL and the lock has freed by
//     lease;
//   - pending while their lock is gone: the lock was lost, the plan is void.
func (s *Service) sweep(ctx context.Context) {
	plans, err := s.o.Store.Active(ctx)
	if err != nil {
		s.log.Warn("sweep: list plans", "err", err)
		return
	}
	now := s.o.Now()
	for _, p := range plans {
		if approvals.Expired(p, now) {
			s.expire(ctx, p)
			continue
		}
		// Work whose waiting replica stopped is completed from the result
		// the runner kept, while its lock still holds: a finished plan goes
		// on to wait for approvals rather than being voided when its lease
		// runs out. Racing the replica that does wait is harmless: one
		// compare-and-swap wins, and the other says nothing.
		if (p.Status == approvals.StatusPlanning || p.Status == approvals.StatusApplying) && s.completeDetached(ctx, p) {
			continue
		}
		h, held, err := s.o.Locks.Holder(ctx, runner.LockKey(p.Project, p.Env))
		if err != nil {
			s.log.Warn("sweep: read lock", "plan_id", p.ID, "err", err)
			return
		}
		if held && h.Fence == p.Fence {
			continue
		}
		// Re-read: the plan may have ended and released its lock just now.
		cur, err := s.o.Store.Get(ctx, p.ID)
		if err != nil || cur.Version != p.Version {
			continue
		}
		switch p.Status {
		case approvals.StatusApplying:
			s.finish(ctx, p, approvals.StatusInterrupted,
				"the bot running this apply stopped before it finished; it will not be retried. "+
					"Check the environment, then plan again.")
		case approvals.StatusPlanning:
			s.finish(ctx, p, approvals.StatusPlanFailed, "the bot running this plan stopped before it finished")
		case approvals.StatusPending:
			s.finish(ctx, p, approvals.StatusInvalidated, "the environment lock was lost, so this plan can no longer be applied")
		}
	}
}

// completeDetached finishes a plan whose work ended with nobody waiting,
// from the result the runner kept. It reports whether there was one.
func (s *Service) completeDetached(ctx context.Context, p approvals.Plan) bool {
	o := s.o.Outcomes
	if o == nil {
		return false
	}
	switch p.Status {
	case approvals.StatusPlanning:
		res, planErr, found := o.PlanOutcome(ctx, p)
		if found {
			s.log.Info("completing a plan whose replica stopped waiting", "plan_id", p.ID)
			_ = s.planned(ctx, p, res, planErr, 0)
		}
		return found
	case approvals.StatusApplying:
		res, applyErr, found := o.ApplyOutcome(ctx, p)
		if !found {
			return false
		}
		g, err := s.o.Notary.PermitOf(p)
		if err != nil {
			return false
		}
		s.log.Info("completing an apply whose replica stopped waiting", "plan_id", p.ID)
		_ = s.applied(ctx, p, g, res, applyErr)
		return true
	}
	return false
}

// Sweep runs one round of the sweeper now: open plans, open grants, then
// verifications under way.
func (s *Service) Sweep(ctx context.Context) {
	s.sweep(ctx)
	s.sweepGrants(ctx)
	s.sweepVerifications(ctx)
}

// verifyMargin is how long past its own timeouts a verification may still
// be running (waiting for a runner, checking out) before it is given up.
const verifyMargin = 10 * time.Minute

// sweepVerifications reports the verifications whose replica stopped
// waiting: from the result a runner pool kept, or as lost once one can no
// longer be running (its replica died, or its result expired unread).
func (s *Service) sweepVerifications(ctx context.Context) {
	v := s.o.Verifications
	if v == nil {
		return
	}
	underway, err := v.Underway(ctx)
	if err != nil {
		s.log.Warn("sweep: list verifications", "err", err)
		return
	}
	outcomes, _ := s.o.Outcomes.(VerifyOutcomes)
	for id, since := range underway {
		p, err := s.o.Store.Get(ctx, id)
		if errors.Is(err, approvals.ErrNotFound) {
			_ = v.Ended(ctx, id)
			continue
		}
		if err != nil {
			continue
		}
		proj, env, err := s.cfg.Resolve(p.Project, p.Env)
		if err != nil || env.Verify == nil || strings.Contains(p.Reason, VerifiedWords) || VerificationFailed(p) {
			_ = v.Ended(ctx, id) // reported already, or no longer verified here
			continue
		}
		if outcomes != nil {
			if res, verr, found := outcomes.VerifyOutcome(ctx, p); found {
				s.log.Info("reporting a verification whose replica stopped waiting", "plan_id", id)
				s.verified(ctx, proj, env, p, res, verr)
				continue
			}
		}
		if s.o.Now().Sub(since) > env.PlanTimeout.D()+env.Verify.SmokeTimeout()+verifyMargin {
			s.verified(ctx, proj, env, p, runner.VerifyResult{}, ErrVerificationLost)
		}
	}
}

// Idle waits until no work the service started is running.
func (s *Service) Idle() { s.work.Wait() }
