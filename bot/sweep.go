package bot

import (
	"context"
	"time"

	"github.com/twokey/twokey/approvals"
	"github.com/twokey/twokey/runner"
)

// sweeper checks the open plans every SweepInterval until ctx ends. Every
// bot process runs one; the compare-and-swap in finish makes exactly one of
// them act on each plan.
func (b *Bot) sweeper(ctx context.Context) {
	t := time.NewTicker(b.o.SweepInterval)
	defer t.Stop()
	var trimmed time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			b.sweep(ctx)
			b.sweepGrants(ctx)
			if tr, ok := b.o.History.(trimmer); ok && time.Since(trimmed) > trimEvery {
				trimmed = time.Now()
				if n, err := tr.Trim(ctx); err != nil {
					b.log.Warn("audit retention", "err", err)
				} else if n > 0 {
					b.log.Info("audit retention: trimmed old events", "events", n)
				}
			}
		}
	}
}

// trimmer applies the audit record's retention.
type trimmer interface {
	Trim(ctx context.Context) (int, error)
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
func (b *Bot) sweep(ctx context.Context) {
	plans, err := b.o.Store.Active(ctx)
	if err != nil {
		b.log.Warn("sweep: list plans", "err", err)
		return
	}
	now := b.o.Now()
	for _, p := range plans {
		if approvals.Expired(p, now) {
			b.expire(ctx, p)
			continue
		}
		h, held, err := b.o.Locks.Holder(ctx, runner.LockKey(p.Project, p.Env))
		if err != nil {
			b.log.Warn("sweep: read lock", "plan_id", p.ID, "err", err)
			return
		}
		if held && h.Fence == p.Fence {
			continue
		}
		// Re-read: the plan may have ended and released its lock just now.
		cur, err := b.o.Store.Get(ctx, p.ID)
		if err != nil || cur.Version != p.Version {
			continue
		}
		if b.completeDetached(ctx, p) {
			continue
		}
		switch p.Status {
		case approvals.StatusApplying:
			b.finish(ctx, p, approvals.StatusInterrupted,
				"the bot running this apply stopped before it finished; it will not be retried. "+
					"Check the environment, then plan again.")
		case approvals.StatusPlanning:
			b.finish(ctx, p, approvals.StatusPlanFailed, "the bot running this plan stopped before it finished")
		case approvals.StatusPending:
			b.finish(ctx, p, approvals.StatusInvalidated, "the environment lock was lost, so this plan can no longer be applied")
		}
	}
}

// outcomes is implemented by runners whose work can finish while nobody
// waits for it (runner pools): the replica that dispatched it stopped.
type outcomes interface {
	PlanOutcome(ctx context.Context, p approvals.Plan) (runner.PlanResult, error, bool)
	ApplyOutcome(ctx context.Context, p approvals.Plan) (runner.ApplyResult, error, bool)
}

// completeDetached finishes a plan whose work ended with nobody waiting,
// from the result the runner kept. It reports whether there was one.
func (b *Bot) completeDetached(ctx context.Context, p approvals.Plan) bool {
	o, ok := b.o.Runner.(outcomes)
	if !ok {
		return false
	}
	switch p.Status {
	case approvals.StatusPlanning:
		res, planErr, found := o.PlanOutcome(ctx, p)
		if found {
			b.log.Info("completing a plan whose replica stopped waiting", "plan_id", p.ID)
			_ = b.planned(ctx, p, res, planErr)
		}
		return found
	case approvals.StatusApplying:
		res, applyErr, found := o.ApplyOutcome(ctx, p)
		if !found {
			return false
		}
		g, err := b.o.Notary.GrantOf(p)
		if err != nil {
			return false
		}
		b.log.Info("completing an apply whose replica stopped waiting", "plan_id", p.ID)
		_ = b.applied(ctx, p, g, res, applyErr)
		return true
	}
	return false
}
