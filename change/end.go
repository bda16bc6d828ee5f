package change

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/twokey/twokey/approvals"
	"github.com/twokey/twokey/audit"
	"github.com/twokey/twokey/runner"
)

// finish ends an open plan with a reason. Of several processes racing to
// end it, only the one whose compare-and-swap wins frees the environment
// and speaks; finish reports whether that was this one.
func (s *Service) finish(ctx context.Context, p approvals.Plan, to approvals.Status, reason string) bool {
	p, err := s.mutate(ctx, p.ID, func(cur approvals.Plan) (approvals.Plan, error) {
		return approvals.End(cur, to, reason, s.o.Now())
	})
	if err != nil {
		var se *approvals.StateError
		if errors.As(err, &se) {
			// Ended elsewhere (a worker, another replica): show it as it is.
			s.refresh(ctx, p)
		} else {
			s.log.Error("end plan", "plan_id", p.ID, "status", string(to), "err", err)
		}
		return false
	}
	s.log.Info("plan ended", "plan_id", p.ID, "status", string(to), "reason", reason)
	typ := audit.Invalidation
	if to == approvals.StatusPlanFailed {
		typ = audit.PlanFailed
	}
	_ = s.record(ctx, typ, "", &p, map[string]string{"status": string(to), "reason": reason})
	s.ended(ctx, p, ":no_entry: "+reason)
	return true
}

// ended does what follows a plan's end: free its lock, drop its saved
// plan, re-render its message and, if there is one, post why in the thread.
func (s *Service) ended(ctx context.Context, p approvals.Plan, note string) {
	s.release(ctx, leaseOf(p))
	_ = s.o.Runner.Discard(context.WithoutCancel(ctx), p.ID)
	s.refresh(ctx, p)
	if note != "" {
		s.post(ctx, p, note)
	}
}

// abort returns an applying plan to pending: nothing was changed. It
// reports whether this call did it: of the replica that waited and
// sweepers that found the result, one does, and only it speaks.
func (s *Service) abort(ctx context.Context, p approvals.Plan, g approvals.Permit, reason string) bool {
	p, err := s.mutate(ctx, p.ID, func(cur approvals.Plan) (approvals.Plan, error) {
		return approvals.Abort(cur, g, reason, s.o.Now())
	})
	var se *approvals.StateError
	if errors.As(err, &se) {
		return false // returned already, or ended meanwhile
	}
	if err != nil {
		s.log.Error("return plan to pending", "plan_id", p.ID, "err", err)
		return false
	}
	s.refresh(ctx, p)
	return true
}

// expire voids a plan that outlived its TTL.
func (s *Service) expire(ctx context.Context, p approvals.Plan) {
	if !approvals.Expired(p, s.o.Now()) {
		return
	}
	s.finish(ctx, p, approvals.StatusInvalidated, fmt.Sprintf("expired at %s without enough approvals", p.ExpiresAt.UTC().Format("15:04 MST")))
}

// mutate updates a plan with a compare-and-swap on a context that survives
// the caller's, so state is never left half-recorded.
func (s *Service) mutate(ctx context.Context, id string, fn func(approvals.Plan) (approvals.Plan, error)) (approvals.Plan, error) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	p, err := approvals.Update(ctx, s.o.Store, id, fn)
	if err == nil {
		s.changed(ctx, id)
	}
	return p, err
}

func (s *Service) release(ctx context.Context, l runner.Lease) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if err := s.o.Locks.Release(ctx, l); err != nil {
		s.log.Error("release lock; it frees when its lease ends", "lock", l.Key, "fence", l.Fence, "err", err)
	}
}

func leaseOf(p approvals.Plan) runner.Lease {
	return runner.Lease{Key: runner.LockKey(p.Project, p.Env), Owner: p.LockOwner, Fence: p.Fence}
}

// refresh re-renders a plan's channel message.
func (s *Service) refresh(ctx context.Context, p approvals.Plan) {
	if p.MessageTS == "" {
		return
	}
	if _, err := s.n.ShowPlan(ctx, s.o.Notary.Signed(p)); err != nil {
		s.log.Error("update plan message", "plan_id", p.ID, "err", err)
	}
}

// post writes in the plan's thread.
func (s *Service) post(ctx context.Context, p approvals.Plan, text string) {
	if p.MessageTS == "" {
		return
	}
	if err := s.n.Note(ctx, threadOf(p), text); err != nil {
		s.log.Error("post in thread", "plan_id", p.ID, "err", err)
	}
}
